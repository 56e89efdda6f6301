"""The online store on a real 3-node Redis Cluster and on a Sentinel-managed master, started on
loopback ports: lookups, the newer-wins rule, repair bookkeeping and retiring a version."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from feature_pipelines import FeatureSet
from feature_pipelines.spec.feature_set import VersionRef
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.publish import publish_windows
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from tests.factories import feature_set
from tests.integration.test_stream_state import SMALL, check_newer_wins_and_generations
from tests.helpers import free_ports, wait_for_redis

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
                       reason="redis-server and redis-cli are needed (apt-get install redis-server)"),
]

SCORES = feature_set()
LEVELS = feature_set("levels")
USERS = [f"u{i}" for i in range(1200)]  # spread over many slots, more than one publish chunk
DAY = datetime(2024, 1, 2, tzinfo=timezone.utc)


def _cluster_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free too (free_ports may return one above
    55535, whose bus port would not exist)."""
    import random
    import socket

    ports: list[int] = []
    # Both below the kernel's ephemeral range (32768 up), where no process is handed a port
    # between this check and the server's bind.
    for candidate in random.SystemRandom().sample(range(10000, 22000), 200):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", candidate))
                b.bind(("127.0.0.1", candidate + 10000))
        except OSError:
            continue
        ports.append(candidate)
        if len(ports) == count:
            return ports
    raise AssertionError("no free ports for a Redis Cluster on loopback")


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER INFO")
    state = info.get("cluster_state") if isinstance(info, dict) else None
    return state == "ok" or "cluster_state:ok" in str(info)


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cluster")
    ports = _cluster_ports(3)
    servers = []
    for port in ports:
        folder = root / str(port)
        folder.mkdir()
        servers.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--dir", str(folder), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port, server in zip(ports, servers):
            wait_for_redis(port, process=server)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(p) for p in ports):
            if time.monotonic() > deadline:
                states = {p: redis.Redis(port=p, decode_responses=True).execute_command("CLUSTER INFO") for p in ports}
                raise AssertionError(f"the Redis Cluster on ports {ports} is not ok after 30 s: {states}")
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports[:2])
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = free_ports(2)
    master = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(master_port), "--save", "",
                               "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = root / "sentinel.conf"
    config.write_text(f"bind 127.0.0.1\nport {sentinel_port}\ndir {root}\n"
                      f"sentinel monitor features 127.0.0.1 {master_port} 1\n")
    sentinel = subprocess.Popen(["redis-server", str(config), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_redis(master_port, process=master)
        wait_for_redis(sentinel_port, process=sentinel)
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/features/0"
    finally:
        for process in (sentinel, master):
            process.terminate()
            process.wait(timeout=20)


def rows(feature_set: FeatureSet, at: datetime, value: float, users: list[str] = USERS) -> list[pa.RecordBatch]:
    return pa.table({"user_id": users, "ts": pa.array([at] * len(users), pa.timestamp("us", tz="UTC")),
                     "x": [value] * len(users)}).to_batches()


def check_store(store: RedisOnlineStore, tmp_path: Path) -> None:
    store.delete_version(VersionRef("scores", 1))
    store.delete_version(VersionRef("levels", 1))
    first = store.publish(SCORES, rows(SCORES, DAY, 1.0))
    assert first.written == len(USERS) and store.count(SCORES) == len(USERS)
    # Newer wins: an older value is refused, an equal-time one replaces, a newer one replaces.
    older = store.publish(SCORES, rows(SCORES, DAY - timedelta(days=1), 0.5))
    assert older.written == 0
    store.publish(SCORES, rows(SCORES, DAY, 2.0, USERS[:10]))
    store.publish(SCORES, rows(SCORES, DAY + timedelta(hours=1), 3.0, USERS[:5]))
    store.publish(LEVELS, rows(LEVELS, DAY, 7.0, USERS[:100]))
    values = store.read(SCORES, [[u] for u in USERS])
    assert [v.features["x"] for v in values[:12]] == [3.0] * 5 + [2.0] * 5 + [1.0] * 2
    assert all(v.features["x"] == 1.0 and v.ts == DAY for v in values[10:])
    # Several feature sets at once, including entities with nothing stored.
    scores, levels = store.read_many([(SCORES, [["u0"], ["nobody"]]), (LEVELS, [["u0"], ["u500"]])])
    assert scores.lists(["x"]) == [[3.0, None]] and scores.ts_micros[1] < 0
    assert levels.lists(["x"]) == [[7.0, None]] and levels.ts_micros[1] < 0
    # Repair bookkeeping and retiring a version.
    store.mark_published(SCORES, ["2024-01-01", "2024-01-02"])
    assert store.published_windows(SCORES) == {"2024-01-01", "2024-01-02"}
    assert store.delete_version(VersionRef("scores", 1)) == len(USERS)
    assert store.count(SCORES) == 0 and store.published_windows(SCORES) == set() and store.count(LEVELS) == 100

    # Publishing from the offline store (what the online asset does), with repair.
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    for day in (1, 2):
        start = datetime(2024, 1, day, tzinfo=timezone.utc)
        key = start.strftime("%Y-%m-%d")
        batch = pa.record_batch({"user_id": USERS, "ts": pa.array([start] * len(USERS), pa.timestamp("us", tz="UTC")),
                                 "x": [float(day)] * len(USERS), "window_key": [key] * len(USERS),
                                 "created": pa.array([start] * len(USERS), pa.timestamp("us", tz="UTC"))})
        offline.open(SCORES).replace_windows([batch], [key], rows_per_window={key: len(USERS)})
        offline.record_checks(SCORES, [key])
    result = publish_windows(SCORES, ["2024-01-02"], offline, store)
    assert result.repaired == ("2024-01-01",) and result.written == len(USERS)
    assert {v.features["x"] for v in store.read(SCORES, [[u] for u in USERS])} == {2.0}

    # Streamed rows with their rolling states (one script call per slot on a cluster).
    store.delete_version(SMALL)
    check_newer_wins_and_generations(store, USERS)  # 1200: some share a slot


def test_online_store_on_a_three_node_cluster(cluster_url: str, tmp_path: Path) -> None:
    store = RedisOnlineStore.from_url(cluster_url, socket_timeout=10)
    # Keys are hash-tagged by entity: one entity's values of all feature sets share a slot.
    [score_key], [level_key] = store.keys(SCORES, [["u7"]]), store.keys(LEVELS, [["u7"]])
    assert score_key == "fs:scores:v1:{u7}" and store.client.keyslot(score_key) == store.client.keyslot(level_key)
    slots = {store.client.keyslot(k) for k in store.keys(SCORES, [[u] for u in USERS])}
    nodes = {store.client.get_node_from_key(k).name for k in store.keys(SCORES, [[u] for u in USERS])}
    assert len(slots) > 1000 and len(nodes) == 3  # the values really are spread over the cluster
    assert store.client.keyslot(store.state_key(SCORES, ["u7"])) == store.client.keyslot(score_key)
    check_store(store, tmp_path)
    check_server_connection(store, cluster_url)


def test_online_store_through_sentinel(sentinel_url: str, tmp_path: Path) -> None:
    store = RedisOnlineStore.from_url(sentinel_url, socket_timeout=10)
    check_store(store, tmp_path)
    check_server_connection(store, sentinel_url)


def check_server_connection(store: RedisOnlineStore, url: str) -> None:
    """The feature server connects with its own options (a short timeout, one immediate retry)
    and reads the same values."""
    served = RedisOnlineStore.from_url(url, socket_timeout=2, retries=1)
    entities = [[u] for u in USERS[:50]] + [["nobody"]]
    assert served.read(SCORES, entities) == store.read(SCORES, entities)
    assert served.read(SCORES, [["u1"]])[0].features == {"x": 2.0}
