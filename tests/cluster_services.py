"""Real servers on loopback for integration tests: a PostgreSQL cluster and a Spark standalone cluster.

Both are context managers that start the servers from programs already on the machine (Debian's
`postgresql` package; the JVM classes inside the `pyspark` wheel), wait with a deadline until
they serve, and stop them in a `finally` block. Nothing here needs pytest, so plain scripts can
use it too:

    with postgres_server(tmp / "pg") as pg, spark_standalone(tmp / "spark") as spark:
        ...  # pg.url, spark.master_url
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A test server could not be found, started or reached."""


def free_ports(count: int = 1) -> list[int]:
    """Distinct free loopback TCP ports for servers to bind. They are taken below the kernel's
    ephemeral range, so that no port the kernel hands out (to a `bind(("", 0))` or an outgoing
    connection of any process) takes one between this check and the server's bind. Another
    process choosing the same port at that moment is still possible, if unlikely (one in
    thousands): servers that check who answers fail loudly then, and cheap ones retry."""
    low = _ephemeral_low()
    choose = random.SystemRandom()
    sockets: list[socket.socket] = []  # held until all are found, so the ports are distinct
    try:
        for _ in range(100 * count):
            if len(sockets) == count:
                break
            sock = socket.socket()
            try:
                # No room below the ephemeral range (an odd configuration): let the kernel choose.
                sock.bind((LOOPBACK, choose.randrange(_FIRST_PORT, low) if low > _FIRST_PORT + 1000 else 0))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        if len(sockets) < count:
            raise ServiceError(f"no {count} free loopback port(s) between {_FIRST_PORT} and {low}")
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


_FIRST_PORT = 10000  # well clear of the registered services below it


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux: 32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

# PostgreSQL refuses to run as root. When we are root (as the tests are), its programs run as
# this account instead, which Debian's `postgresql` package creates.
_POSTGRES_ACCOUNT = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server on loopback. It trusts every local connection, so `password`
    is never checked; it is in `url` for clients that insist on one."""

    host: str
    port: int
    user: str
    password: str
    database: str
    data_dir: Path
    log_file: Path


def find_postgres_bindir() -> Path:
    """The folder with PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`)."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            reported = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            reported = ""
        if reported and (Path(reported) / "initdb").is_file():
            return Path(reported)
    # Debian keeps the server programs in /usr/lib/postgresql/<major>/bin, off the PATH; the
    # pg_config of libpq-dev reports /usr/bin, which has only the client programs.
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").is_file()]
    if not found:
        raise ServiceError(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found: neither `pg_config --bindir` "
            "nor /usr/lib/postgresql/*/bin has them. Install them with `apt-get install postgresql`."
        )
    return max(found, key=lambda d: tuple(int(n) for n in re.findall(r"\d+", d.parent.name)))


def _postgres_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL's programs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_POSTGRES_ACCOUNT)
    except KeyError:
        raise ServiceError(
            f"running as root, which PostgreSQL refuses, and there is no `{_POSTGRES_ACCOUNT}` user to "
            "run it as; `apt-get install postgresql` creates one."
        ) from None


def _run_postgres_program(
    account: pwd.struct_passwd | None, args: Sequence[str | Path], log: IO[bytes], timeout_s: float, what: str
) -> None:
    """Run one of PostgreSQL's programs (as `account` when given), its output into `log`."""
    extra: dict[str, Any] = {}
    env = dict(os.environ)
    if account is not None:
        # Switch user in the child (no runuser/su needed), dropping root's groups; give it its own
        # HOME so it never tries to read root's.
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env["HOME"] = account.pw_dir
    log.write(f"$ {shlex.join(str(a) for a in args)}\n".encode())
    log.flush()
    try:
        result = subprocess.run(
            [str(a) for a in args], check=False, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd="/", timeout=timeout_s, **extra,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{what} did not finish within {timeout_s:.0f}s; see {log.name}:\n"
                           f"{_tail(Path(log.name))}") from None
    if result.returncode != 0:
        raise ServiceError(f"{what} failed (exit {result.returncode}); see {log.name}:\n{_tail(Path(log.name))}")


def _stop_postgres(
    bindir: Path, account: pwd.struct_passwd | None, data_dir: Path, log: IO[bytes], timeout_s: float
) -> None:
    """Stop the server of `data_dir` at once (no checkpoint: the data is thrown away); SIGKILL it
    if pg_ctl cannot."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return  # never started, or already stopped
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid = None
    try:
        _run_postgres_program(
            account,
            [bindir / "pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "-t", str(int(timeout_s)), "stop"],
            log, timeout_s + 5, "pg_ctl stop",
        )
    except ServiceError:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)  # its backends exit on their own when the postmaster dies
            except ProcessLookupError:
                pass


@contextmanager
def postgres_server(
    root: Path,
    *,
    user: str = "featurestore",
    password: str = "featurestore",
    database: str = "featurestore",
    timeout_s: float = 60.0,
) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server on 127.0.0.1 with a fresh cluster, yield it, and stop it.

    The cluster has superuser `user` and an empty database `database`, trusts every connection
    and does not fsync. Its log is `root/postgres.log`. The cluster itself is `root/pgdata` (so
    `root` should be fresh: initdb refuses a non-empty folder), except as root: the `postgres`
    account the server then runs as must own the cluster and reach it, and it cannot enter
    pytest's temporary folders (mode 0700, owned by root), so the cluster goes into a temporary
    folder of its own under /tmp instead, deleted on exit. The Unix socket always goes into such
    a short folder, since socket paths are limited to about 100 characters.
    """
    bindir = find_postgres_bindir()
    account = _postgres_account()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / "postgres.log"
    private = Path(tempfile.mkdtemp(prefix="pg-"))
    try:
        socket_dir = private / "socket"
        socket_dir.mkdir()
        data_dir = root / "pgdata" if account is None else private / "pgdata"
        if account is not None:
            for folder in (private, socket_dir):
                os.chown(folder, account.pw_uid, account.pw_gid)
        (port,) = free_ports(1)
        # Opened here, so the server (which inherits it through pg_ctl) can write it as any user.
        with open(log_file, "ab") as log:
            try:
                _run_postgres_program(
                    account,
                    [bindir / "initdb", "-D", data_dir, "-U", user, "--auth=trust", "--encoding=UTF8",
                     "--locale=C", "--no-sync"],
                    log, timeout_s, "initdb",
                )
                server_options = (
                    f"-p {port} -k {shlex.quote(str(socket_dir))} -c listen_addresses={LOOPBACK} -c fsync=off"
                )
                # -w: return once the server accepts connections (or fail after -t seconds).
                _run_postgres_program(
                    account,
                    [bindir / "pg_ctl", "-D", data_dir, "-o", server_options, "-w", "-t", str(int(timeout_s)),
                     "start"],
                    log, timeout_s + 5, "pg_ctl start",
                )
                if database != "postgres":  # initdb made that one already
                    _run_postgres_program(
                        account,
                        [bindir / "createdb", "-h", LOOPBACK, "-p", str(port), "-U", user, database],
                        log, timeout_s, "createdb",
                    )
                yield PostgresServer(LOOPBACK, port, user, password, database, data_dir, log_file)
            finally:
                _stop_postgres(bindir, account, data_dir, log, timeout_s)
    finally:
        shutil.rmtree(private, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Spark standalone
# --------------------------------------------------------------------------------------------

_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


@dataclass(frozen=True)
class SparkStandalone:
    """A running Spark standalone master with one worker, both on loopback."""

    host: str
    port: int
    web_ui_port: int
    worker_port: int
    worker_web_ui_port: int
    cores: int
    memory: str
    spark_home: Path
    work_dir: Path
    master_log: Path
    worker_log: Path

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def web_ui_url(self) -> str:
        return f"http://{self.host}:{self.web_ui_port}"


def pyspark_home() -> Path:
    """The installed `pyspark` package folder, which is a Spark distribution (jars/, bin/)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ServiceError("pyspark is not installed in this Python.")
    return Path(spec.origin).parent


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "java was not found (no JAVA_HOME, none on PATH); "
            "install it with `apt-get install openjdk-17-jre-headless`."
        )
    return java


def _spark_class_command(spark_home: Path, env: dict[str, str], main_class: str, args: Sequence[str]) -> list[str]:
    """The JVM command that `bin/spark-class main_class args` would run: `java -cp "<spark>/jars/*"
    main_class args`, plus the JVM options Spark needs (the --add-opens of its JavaModuleOptions,
    SPARK_DAEMON_MEMORY, SPARK_MASTER_OPTS, ...), built by Spark's own launcher library (~0.1 s)."""
    launcher = subprocess.run(
        [_java(), "-Xmx128m", "-cp", f"{spark_home}/jars/*", "org.apache.spark.launcher.Main", main_class, *args],
        check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    if launcher.returncode != 0:
        raise ServiceError(f"Spark's launcher failed for {main_class}: {launcher.stderr.decode(errors='replace')}")
    # It prints the arguments separated by NUL characters, after a NUL and a newline (which
    # spark-class's `read` drops as leading white space).
    command = [part.strip("\n") for part in launcher.stdout.decode().split("\0") if part.strip()]
    if not command or main_class not in command:
        raise ServiceError(f"Spark's launcher printed no command for {main_class}: {launcher.stdout!r}")
    return command


def _spark_env(spark_home: Path, local_dir: Path) -> dict[str, str]:
    """This environment plus what every Spark daemon started here needs."""
    core_jars = " ".join(jar.name for jar in (spark_home / "jars").glob("spark-core_*.jar"))
    scala = re.search(r"spark-core_(\d+\.\d+)-", core_jars)
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": LOOPBACK,  # every service binds to loopback
        "SPARK_LOCAL_DIRS": str(local_dir),  # shuffle and spill files
        # The launcher insists on a Scala version outside a source build; the jars tell it.
        "SPARK_SCALA_VERSION": scala.group(1) if scala else "2.13",
    }


def _start_in_own_group(
    command: Sequence[str], env: dict[str, str], log_file: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a new process group (the worker's executors, and their
    Python workers, join it), its output appended to `log_file`."""
    with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_group(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group of `process`, then SIGKILL whatever of it is left after `grace_s`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:  # also reaches executors that outlived the worker
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _master_status(web_ui_port: int) -> dict[str, Any] | None:
    """The master's JSON status page, or None while it does not answer."""
    # No proxy: an http_proxy in the environment must not see (or swallow) loopback requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{LOOPBACK}:{web_ui_port}/json/", timeout=2) as response:
            status = json.load(response)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _wait_until(
    ready: Callable[[], bool],
    deadline: float,
    processes: Sequence[tuple[subprocess.Popen[bytes], Path]],
    what: str,
) -> None:
    """Poll `ready()` until it is true; fail with the logs' tails if a process exits or `deadline` passes."""
    while not ready():
        for process, log in processes:
            if process.poll() is not None:
                raise ServiceError(
                    f"{what}: a Spark daemon exited (code {process.returncode}); {log}:\n{_tail(log)}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}:\n{_tail(log)}" for _, log in processes)
            raise ServiceError(f"{what}: timed out. Logs:\n{tails}")
        time.sleep(0.2)


@contextmanager
def spark_standalone(
    root: Path, cores: int = 2, memory: str = "2g", *, timeout_s: float = 60.0
) -> Iterator[SparkStandalone]:
    """Start a Spark standalone master and one worker (`cores`, `memory` for executors) on
    127.0.0.1 from the jars of the installed pyspark, yield them once the worker is ALIVE, and
    stop both. Logs: `root/spark-master.log`, `root/spark-worker.log`; executors' work folders
    and logs under `root/work`, their scratch space under `root/local`.

    Drivers must stay on loopback too: `spark.driver.host=127.0.0.1`,
    `spark.driver.bindAddress=127.0.0.1` (or SPARK_LOCAL_IP=127.0.0.1). Python UDFs run on the
    executors with the driver's PYSPARK_PYTHON (default `python3`): a driver started from Python
    ignores `spark.pyspark.python`, which only spark-submit applies, so set the variable.
    """
    spark_home = pyspark_home()
    root = Path(root).resolve()
    work_dir, local_dir = root / "work", root / "local"
    for folder in (work_dir, local_dir):
        folder.mkdir(parents=True, exist_ok=True)
    master_log, worker_log = root / "spark-master.log", root / "spark-worker.log"
    port, web_ui_port, worker_port, worker_web_ui_port = free_ports(4)

    env = _spark_env(spark_home, local_dir)
    # Spark 4 also starts a REST submission server on the fixed port 6066 by default: off, so
    # that clusters never collide.
    env["SPARK_MASTER_OPTS"] = f"{env.get('SPARK_MASTER_OPTS', '')} -Dspark.master.rest.enabled=false".strip()
    master_command = _spark_class_command(
        spark_home, env, _MASTER_CLASS,
        ["--host", LOOPBACK, "--port", str(port), "--webui-port", str(web_ui_port)],
    )
    worker_command = _spark_class_command(
        spark_home, env, _WORKER_CLASS,
        ["--host", LOOPBACK, "--port", str(worker_port), "--webui-port", str(worker_web_ui_port),
         "--cores", str(cores), "--memory", memory, "--work-dir", str(work_dir), f"spark://{LOOPBACK}:{port}"],
    )

    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    deadline = time.monotonic() + timeout_s
    try:
        started.append((_start_in_own_group(master_command, env, master_log, root), master_log))
        # The worker only starts once the master answers: a worker that finds no master retries
        # after 5-15 s, which would make most of the start-up time waiting.
        _wait_until(
            lambda: (_master_status(web_ui_port) or {}).get("status") == "ALIVE",
            deadline, started, f"Spark master on port {port}",
        )
        started.append((_start_in_own_group(worker_command, env, worker_log, root), worker_log))
        _wait_until(
            lambda: any(w.get("state") == "ALIVE" for w in (_master_status(web_ui_port) or {}).get("workers", [])),
            deadline, started, f"Spark worker registering with spark://{LOOPBACK}:{port}",
        )
        yield SparkStandalone(
            LOOPBACK, port, web_ui_port, worker_port, worker_web_ui_port, cores, memory, spark_home, work_dir,
            master_log, worker_log,
        )
    finally:
        for process, _ in reversed(started):  # worker (and its executors) first
            _stop_group(process)


@dataclass(frozen=True)
class SparkConnectServer:
    """A running Spark Connect server on loopback; its driver runs the given master."""

    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"sc://{self.host}:{self.port}"


@contextmanager
def spark_connect_server(
    root: Path, master: str = "local[2]", python: str | None = None, *, timeout_s: float = 90.0
) -> Iterator[SparkConnectServer]:
    """Start a Spark Connect server (the `SparkConnectServer` class that pyspark's jars ship,
    launched as `spark-submit` would) on 127.0.0.1, yield it once its gRPC port accepts
    connections, and stop it. Its Python workers run `python` (default: this interpreter's
    PYSPARK_PYTHON, else `python3`). Log: `root/spark-connect.log`."""
    spark_home = pyspark_home()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "spark-connect.log"
    (port,) = free_ports(1)
    python = python or os.environ.get("PYSPARK_PYTHON", "python3")
    env = _spark_env(spark_home, root / "local")
    env["PYSPARK_PYTHON"] = python
    confs = {
        "spark.connect.grpc.binding.address": LOOPBACK,
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.pyspark.python": python,
        "spark.ui.enabled": "false",
    }
    args = ["--class", _CONNECT_CLASS, "--master", master, "--name", "feature-store-connect"]
    for key, value in confs.items():
        args += ["--conf", f"{key}={value}"]
    command = _spark_class_command(spark_home, env, "org.apache.spark.deploy.SparkSubmit", [*args, "spark-internal"])
    process = _start_in_own_group(command, env, log, root)
    try:
        _wait_until(lambda: _accepts(port), time.monotonic() + timeout_s, [(process, log)],
                    f"Spark Connect server on port {port}")
        yield SparkConnectServer(LOOPBACK, port, log)
    finally:
        _stop_group(process)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0
