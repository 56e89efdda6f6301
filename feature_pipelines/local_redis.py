"""The embedded local default for the online store: a real `redis-server` we start ourselves.

The server keeps its data (append-only file) in a folder of the project, so stopping and
starting it again loses nothing. Several processes may share it: the first one starts it,
and only that one stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from feature_pipelines.errors import OnlineStoreError

_PORT_FILE = "redis.port"


class LocalRedisServer:
    """A `redis-server` process bound to 127.0.0.1, with its data under `directory`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise OnlineStoreError("the local redis-server is not started; call start() first.")
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def owned(self) -> bool:
        """True when this object started the server (and so will stop it)."""
        return self._process is not None

    def start(self, timeout: float = 15.0) -> "LocalRedisServer":
        """Reuse a server already running for this folder, or start one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        running = self._running_port()
        if running is not None:
            self._port = running
            return self
        binary = shutil.which("redis-server")
        if binary is None:
            raise OnlineStoreError(
                "redis-server is not installed, and no REDIS_URL is set. Install it "
                "(`apt-get install redis-server`) or point REDIS_URL at a Redis server."
            )
        port = _free_port()
        log = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--save", "",
                "--protected-mode", "yes",
                "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise OnlineStoreError(f"redis-server exited at start (code {self._process.returncode}); see {log}.")
            if _ping(port):
                self._port = port
                (self.directory / _PORT_FILE).write_text(str(port))
                return self
            time.sleep(0.05)
        self._process.kill()
        raise OnlineStoreError(f"redis-server did not answer within {timeout:.0f}s; see {log}.")

    def stop(self) -> None:
        """Stop the server if this object started it and no other process is still using it."""
        if self._process is None:
            return
        client = redis.Redis(host="127.0.0.1", port=self._port, socket_timeout=5)
        try:
            if int(client.info("clients")["connected_clients"]) > 1:
                # Another run still works with it; it stays up (its data is on disk either way).
                self._process = None
                return
            client.shutdown(nosave=False)
        except redis.RedisError:
            pass  # SHUTDOWN closes the connection on success; the wait below is the real check
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        (self.directory / _PORT_FILE).unlink(missing_ok=True)
        self._process = None

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
        served = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).config_get("dir").get("dir")
        return port if served and Path(served).resolve() == self.directory.resolve() else None

    def __enter__(self) -> "LocalRedisServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _ping(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
