"""Helpers the tests share: project paths, writing sources, reading the offline store, Dagster
environments and a running daemon. Fixtures live in the conftest of the tests that use them."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from feature_pipelines.cli.sample_data import SampleSize
from feature_pipelines.settings import Settings
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from tests.cluster_services import free_ports  # noqa: F401  (tests import it from here)

PROJECT_DIR = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's console scripts (dagster, dagster-daemon, featurestore)
# Small enough to keep the suite fast, large enough to exercise many entities and windows.
# Pinned (2024-01-01..2024-02-09), so that no test depends on today's date.
TEST_SAMPLE = SampleSize(end=date(2024, 2, 9), transactions=4_000, accounts=120, merchants=25, days=40, seed=11)
# The instant the session's `materialized_store` is complete for: every row with ts <= MATERIALIZED_AT -
# source_delay is materialized and none later, as production would see it then.
MATERIALIZED_AT = datetime(2024, 2, 19, 23, 59, 59, 999999, tzinfo=timezone.utc)


def write_source(root: str | Path, name: str, frame: pd.DataFrame, schema: pa.Schema | None = None) -> str:
    """Write `frame` as a Delta source table `name` under `root`; return its path."""
    path = f"{root}/{name}"
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    write_deltalake(path, table, mode="overwrite", schema_mode="overwrite")
    return path


def offline_frame(store: DeltaOfflineStore, feature_set, window_keys=None, drop_created: bool = True) -> pd.DataFrame:
    """The offline rows, sorted, without the per-run `created` column."""
    frame = store.open(feature_set).read(window_keys).to_pandas()
    if drop_created:
        frame = frame.drop(columns=["created"])
    return frame.sort_values([*feature_set.entity_names, feature_set.timestamp]).reset_index(drop=True)


def files_digest(root: str | Path) -> dict[str, str]:
    """Every file and folder under `root`: relative path -> SHA-256 of its bytes ("dir" for a
    folder), to tell that stored data was left exactly as it was."""
    digest = {}
    for path in sorted(Path(root).rglob("*")):
        digest[str(path.relative_to(root))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def dagster_env(settings: Settings, home: Path) -> dict[str, str]:
    """Environment for Dagster and featurestore subprocesses: a fresh DAGSTER_HOME with the repo's
    dagster.yaml, and the stores of `settings`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        FEATURESTORE_PROJECT_DIR=str(PROJECT_DIR),
        FEATURESTORE_DATA_DIR=str(settings.data_dir),
        FEATURESTORE_SOURCE_ROOT=settings.source_root,
        FEATURESTORE_OFFLINE_URI=settings.offline_uri,
        REDIS_URL=settings.redis_url or "",
        SPARK_DRIVER_MEMORY="1g",
        SPARK_SHUFFLE_PARTITIONS="2",
        SPARK_LOCAL_IP="127.0.0.1",
    )
    return env


class RedisExited(AssertionError):
    """A redis-server we started exited before it served (most likely: its port was taken)."""


def wait_for_redis(port: int, timeout_s: float = 10.0, process: subprocess.Popen | None = None) -> None:
    """Return once a Redis server answers on `port`. With `process`, only once that very server
    answers (so another one on the same port is never taken for it), and RedisExited at once if
    it exits."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process is not None and process.poll() is not None:
                raise RedisExited(f"redis-server on port {port} exited at start (code {process.returncode})")
            try:
                if process is None and client.ping():
                    return
                if process is not None and client.info("server").get("process_id") == process.pid:
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {port} did not start within {timeout_s:g} s")
            time.sleep(0.05)
    finally:
        client.close()


class RedisProcess:
    """A redis-server on a fixed loopback port with an append-only file, so it can be stopped
    and started again with its data (as a production Redis with persistence would)."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_ports()[0]
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.served = False  # once it has, its port is part of its URL and stays

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for attempt in range(3):
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_redis(self.port, process=self.process)
                self.served = True
                return
            except RedisExited:
                if self.served or attempt == 2:
                    raise
                self.port = free_ports()[0]  # taken by another process since it was chosen

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            self.process.wait(timeout=20)


# The real dagster-daemon, with one constant changed: Dagster 1.13 hard-codes 30 s between the
# backfill daemon's iterations (dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS, read
# at each sleep), so a backfill waits up to 30 s to start and 30 s more to be marked done. The
# tests would spend most of their time in those sleeps; 2 s changes when the loop looks, not what
# it does.
_QUICK_DAEMON = (
    "import sys, dagster._daemon.controller as c; c.DEFAULT_DAEMON_INTERVAL_SECONDS = 2; "
    "from dagster._daemon.cli import main; sys.argv[0] = 'dagster-daemon'; sys.exit(main())"
)


@contextmanager
def running_daemon(env: dict[str, str], log_path: Path) -> Iterator[None]:
    """A dagster-daemon running against the instance of `env` until the block ends."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from feature_pipelines.orchestration.backfills import daemon_running

    ref = InstanceRef.from_dir(env["DAGSTER_HOME"])
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]  # dagster.yaml reads it for the storage folder
    # Create the SQLite storages first: a daemon and a CLI creating them at the same moment race
    # ("table secondary_indexes already exists") and the daemon dies.
    with DagsterInstance.from_ref(ref) as instance:
        instance.get_runs(limit=1)
        instance.get_backfills(limit=1)
        instance.all_asset_keys()
        instance.all_instigator_state()
    with log_path.open("w") as log:
        daemon = subprocess.Popen([str(BIN / "python"), "-c", _QUICK_DAEMON, "run", "-w", "workspace.yaml"], cwd=PROJECT_DIR,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            with DagsterInstance.from_ref(ref) as instance:
                while not daemon_running(instance):
                    assert daemon.poll() is None, f"dagster-daemon exited; see {log_path}"
                    assert time.monotonic() < deadline, f"dagster-daemon did not report within 120 s; see {log_path}"
                    time.sleep(1)
            yield
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
            if previous is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = previous
