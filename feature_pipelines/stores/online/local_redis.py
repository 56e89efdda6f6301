"""The embedded local default for the online store: a real `redis-server` we start ourselves.

The server keeps its data (append-only file) in a folder of the project, so stopping and
starting it again loses nothing. Several processes may share it (the CLI, Dagster runs):
each holds a lease file while it uses the server, and whoever releases the last live lease
shuts the server down.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_pipelines.errors import OnlineStoreError

_PORT_FILE = "redis.port"
_START_ATTEMPTS = 3
_LEASES = "leases"


class LocalRedisServer:
    """A `redis-server` process bound to 127.0.0.1, with its data under `directory`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory).resolve()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._lease: Path | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise OnlineStoreError("the local redis-server is not started; call start() first.")
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def owned(self) -> bool:
        """True when this object started the server process."""
        return self._process is not None

    def start(self, timeout: float = 15.0) -> "LocalRedisServer":
        """Take a lease, and reuse the server running for this folder or start one."""
        (self.directory / _LEASES).mkdir(parents=True, exist_ok=True)
        self._lease = self.directory / _LEASES / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lease.touch()
        running = self._running_port()
        if running is not None:
            self._port = running
            return self
        try:
            self._port = self._launch(timeout)
        except BaseException:
            self._release()
            raise
        return self

    def _launch(self, timeout: float) -> int:
        binary = shutil.which("redis-server")
        if binary is None:
            raise OnlineStoreError(
                "redis-server is not installed, and no REDIS_URL is set. Install it "
                "(`apt-get install redis-server`, or run scripts/setup.sh) or point REDIS_URL at a Redis server."
            )
        log = self.directory / "redis.log"
        for attempt in range(_START_ATTEMPTS):
            # The port is free when chosen, but another process may bind it before the server
            # does: then the server exits at once, and we start it again on another port.
            port = _free_port()
            logged = log.stat().st_size if log.exists() else 0
            self._process = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.directory),
                 "--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--logfile", str(log)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # outlives this process while other leases hold it
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                if _serves(port, self._process.pid):  # this very server, not another on the port
                    (self.directory / _PORT_FILE).write_text(str(port))
                    return port
                time.sleep(0.05)
            else:
                self._process.kill()
                raise OnlineStoreError(f"redis-server did not answer within {timeout:.0f}s; see {log}.")
            if attempt + 1 == _START_ATTEMPTS or not _port_taken(log, logged):
                break
        raise OnlineStoreError(f"redis-server exited at start (code {self._process.returncode}); see {log}.")

    def stop(self) -> None:
        """Release this lease; the last live lease shuts the server down (its data stays on disk)."""
        if self._lease is None:
            return
        self._release()
        if self._live_leases() or self._port is None:
            return
        try:
            with _client(self._port, timeout=5) as client:
                client.shutdown(nosave=False)
        except redis.RedisError:
            pass  # SHUTDOWN drops the connection on success; the checks below are the real test
        if self._process is not None:
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        else:
            deadline = time.monotonic() + 15
            while _ping(self._port) and time.monotonic() < deadline:
                time.sleep(0.05)
        (self.directory / _PORT_FILE).unlink(missing_ok=True)
        self._process = None

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.unlink(missing_ok=True)
            self._lease = None

    def _live_leases(self) -> list[Path]:
        live = []
        for lease in (self.directory / _LEASES).glob("*"):
            pid = int(lease.name.split("-", 1)[0])
            if _alive(pid):
                live.append(lease)
            else:
                lease.unlink(missing_ok=True)  # a crashed holder's lease
        return live

    def _running_port(self) -> int | None:
        port_file = self.directory / _PORT_FILE
        if not port_file.exists():
            return None
        try:
            port = int(port_file.read_text().strip())
        except ValueError:
            return None
        if not _ping(port):
            return None
        # A recycled port may belong to someone else's server: check it serves this folder.
        with _client(port, timeout=1) as client:
            served = client.config_get("dir").get("dir")
        return port if served and Path(served).resolve() == self.directory else None

    def __enter__(self) -> "LocalRedisServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _client(port: int, timeout: float) -> redis.Redis:
    # No retries: a refused connection is the answer here, not a glitch to back off from.
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _ping(port: int) -> bool:
    try:
        with _client(port, timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _serves(port: int, pid: int) -> bool:
    """Whether the redis-server with process id `pid` answers on `port`."""
    try:
        with _client(port, timeout=0.5) as client:
            return client.info("server").get("process_id") == pid
    except redis.RedisError:
        return False


def _port_taken(log: Path, since: int) -> bool:
    """Whether the server's log, from byte `since`, says its port was taken."""
    if not log.exists():
        return False
    with log.open("rb") as lines:
        lines.seek(since)
        return b"Address already in use" in lines.read()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
