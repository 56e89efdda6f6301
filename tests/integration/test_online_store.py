"""The Redis online store: newer `ts` wins atomically, namespaces per version, clear errors."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import redis

from feature_pipelines import FeatureSet
from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.local_redis import LocalRedisServer
from feature_pipelines.stores.online.lookup import lookup
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from tests.factories import feature_set, source

UTC = timezone.utc
SOURCE = source("s", {"k": "string", "v": "float64", "label": "string"}, timestamp="t")


def spec(version: int = 1) -> FeatureSet:
    return feature_set("f", version=version, keys={"k": "string"}, features={"v": "float64", "label": "string"},
                       source_=SOURCE)


def batch(rows: list[tuple[str, datetime, float | None, str | None]]) -> pa.RecordBatch:
    k, ts, v, label = zip(*rows)
    return pa.RecordBatch.from_pydict(
        {"k": list(k), "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "v": list(v), "label": list(label)}
    )


T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)


def test_newer_wins_and_equal_replaces(online_store: RedisOnlineStore) -> None:
    fs = spec()
    first = online_store.publish(fs, [batch([("a", T0, 1.0, "x"), ("b", T0, 2.0, None)])])
    assert (first.rows, first.written) == (2, 2)
    older = online_store.publish(fs, [batch([("a", T0 - timedelta(microseconds=1), 9.0, "old")])])
    assert (older.written, older.kept_newer) == (0, 1)
    equal = online_store.publish(fs, [batch([("b", T0, 3.0, "fixed")])])
    assert equal.written == 1
    a, b, missing = online_store.read(fs, [["a"], ["b"], ["zzz"]])
    assert (a.ts, a.features) == (T0, {"v": 1.0, "label": "x"})
    assert b.features == {"v": 3.0, "label": "fixed"}
    assert missing is None


def test_versions_do_not_collide(online_store: RedisOnlineStore) -> None:
    online_store.publish(spec(1), [batch([("a", T0, 1.0, "v1")])])
    online_store.publish(spec(2), [batch([("a", T0 - timedelta(days=1), 2.0, "v2")])])
    assert online_store.read(spec(1), [["a"]])[0].features["label"] == "v1"
    assert online_store.read(spec(2), [["a"]])[0].features["label"] == "v2"
    assert online_store.count(spec(1)) == online_store.count(spec(2)) == 1


def test_interleaved_publishes_keep_the_newest(online_store: RedisOnlineStore) -> None:
    """Many chunks in any order: the stored value is always the max-ts row per entity."""
    fs = spec()
    # Rows are unique on (entity, ts), as offline rows are; their publish order is shuffled.
    order = random.Random(5).sample(range(2000), 2000)
    rows = [(f"e{i % 50}", T0 + timedelta(minutes=i), float(i), str(i)) for i in order]
    newest = {}
    for k, ts, v, label in rows:
        if k not in newest or ts > newest[k][0]:
            newest[k] = (ts, v)
    online_store.publish(fs, [batch(rows[i : i + 300]) for i in range(0, len(rows), 300)])
    stored = online_store.read(fs, [[k] for k in sorted(newest)])
    assert [(s.ts, s.features["v"]) for s in stored] == [newest[k] for k in sorted(newest)]


EVERY = feature_set("every", keys={"k": "string"}, temporal_join_lookback="1d",
                    features={"f": "float64", "n": "int64", "b": "bool", "s": "string", "t": "timestamp", "d": "date"})


def test_online_features_are_the_published_values_with_expiry(online_store: RedisOnlineStore, tmp_path: Path) -> None:
    """`get_online_features` through Redis, as lists and as a DataFrame, against the published
    rows: nulls (NaN too), signs, extreme ints, booleans, empty strings, times, an entity with
    nothing stored, and values aged exactly the lookback (present) and one microsecond more (expired)."""
    now = T0 + timedelta(days=3)
    day = date(2024, 1, 2)
    published = {  # entity -> ts, f, n, b, s, t, d
        "fresh": (now - timedelta(hours=1), 1.5, 2**62 + 1, True, "x", T0, day),
        "nulls": (now, float("nan"), None, None, None, None, None),
        "at-lookback": (now - timedelta(days=1), -0.0, -3, False, "", T0 + timedelta(microseconds=1), day),
        "expired": (now - timedelta(days=1, microseconds=1), 2.0, 1, True, "old", T0, day),
    }
    names = ["k", "ts", "f", "n", "b", "s", "t", "d"]
    types = [pa.string(), pa.timestamp("us", tz="UTC"), pa.float64(), pa.int64(), pa.bool_(), pa.string(),
             pa.timestamp("us", tz="UTC"), pa.date32()]
    columns = list(zip(*[(k, *v) for k, v in published.items()]))
    online_store.publish(EVERY, [pa.RecordBatch.from_arrays([pa.array(c, t) for c, t in zip(columns, types)], names)])
    api = FeatureStore(Catalog([CatalogEntry(EVERY, tmp_path)]), DeltaOfflineStore(str(tmp_path / "offline")), online_store)
    entities = ["expired", "fresh", "nobody", "nulls", "at-lookback"]

    got = api.get_online_features(["every:1:*"], [{"k": e} for e in entities], now=now, as_frame=False)
    shown = {"fresh": published["fresh"], "at-lookback": published["at-lookback"]}
    expected = {"k": entities}
    for j, (feature, as_read) in enumerate([("f", float), ("n", int), ("b", bool), ("s", str),
                                            ("t", datetime.isoformat), ("d", date.isoformat)], start=1):
        expected[feature] = [as_read(shown[e][j]) if e in shown else None for e in entities]
    assert [(c, [(type(v), repr(v)) for v in got[c]]) for c in got] == \
           [(c, [(type(v), repr(v)) for v in expected[c]]) for c in expected]

    # The DataFrame is pandas' frame of those lists, types included; an entity frame keeps its index.
    frame = api.get_online_features(["every:1:*"], [{"k": e} for e in entities], now=now)
    pd.testing.assert_frame_equal(frame, pd.DataFrame(got), check_exact=True)
    rows = pd.DataFrame({"k": entities}, index=[50, 40, 30, 20, 10])
    pd.testing.assert_frame_equal(api.get_online_features(["every:1:f", "every:1:s"], rows, now=now),
                                  pd.DataFrame({"k": entities, "f": got["f"], "s": got["s"]}, index=rows.index),
                                  check_exact=True)
    [values] = lookup(online_store, api.resolve(["every:1:*"]), {"k": entities}, now)
    assert values.statuses() == ["expired", "present", "not_found", "present", "present"]


PUBLISHERS, ROUNDS, RACE_KEYS, CHUNK = 4, 40, 48, 6


def test_concurrent_publishers_never_lose_the_newest(redis_server: LocalRedisServer, online_store: RedisOnlineStore) -> None:
    """Publishers racing on the same keys, each with its own connection (as separate runs have),
    each sending a mix of the newest and older rows: after every round, Redis holds the newest
    row of each key. A read-then-write from Python loses some of them within a few rounds."""
    fs = spec()
    keys = [f"e{i}" for i in range(RACE_KEYS)]
    rng = random.Random(11)
    publishers = [RedisOnlineStore(redis.Redis.from_url(redis_server.url), redis_server.url) for _ in range(PUBLISHERS)]
    deadline = time.monotonic() + 120

    def publish_share(store: RedisOnlineStore, rows: list, start: threading.Barrier) -> None:
        start.wait()  # all publishers begin the round together
        for i in range(0, len(rows), CHUNK):
            store.publish(fs, [batch(rows[i : i + CHUNK])])

    lost = []
    try:
        with ThreadPoolExecutor(PUBLISHERS) as pool:
            for r in range(ROUNDS):
                assert time.monotonic() < deadline, f"the race did not finish in time (round {r})"
                day = T0 + timedelta(days=r)  # every round is newer than the ones before
                shares: list[list] = [[] for _ in range(PUBLISHERS)]
                newest = {}
                for k in keys:
                    # One row per publisher: minute m is held by publisher order[m]; the last is the newest.
                    order = rng.sample(range(PUBLISHERS), PUBLISHERS)
                    for minute, p in enumerate(order):
                        shares[p].append((k, day + timedelta(minutes=minute), float(minute), f"{r}:{p}"))
                    newest[k] = (day + timedelta(minutes=PUBLISHERS - 1), f"{r}:{order[-1]}")
                for share in shares:
                    rng.shuffle(share)  # old and new rows interleaved within each publisher's stream
                start = threading.Barrier(PUBLISHERS, timeout=60)
                for future in [pool.submit(publish_share, publishers[p], shares[p], start) for p in range(PUBLISHERS)]:
                    future.result(timeout=60)
                stored = online_store.read(fs, [[k] for k in keys])
                lost += [(r, k) for k, s in zip(keys, stored) if (s.ts, s.features["label"]) != newest[k]]
    finally:
        for store in publishers:
            store.client.close()
    assert not lost, f"{len(lost)} newest rows were overwritten by older ones, e.g. (round, key) {lost[:5]}"


def test_redis_down_gives_clear_error(tmp_path: Path) -> None:
    with LocalRedisServer(tmp_path / "r") as server:
        url = server.url
    store = RedisOnlineStore(redis.Redis.from_url(url, socket_connect_timeout=1), url)
    with pytest.raises(OnlineStoreError, match="publishing to Redis .* failed: .*re-run the window to publish it"):
        store.publish(spec(), [batch([("a", T0, 1.0, "x")])])


def test_local_server_is_shared_and_keeps_data(tmp_path: Path) -> None:
    with LocalRedisServer(tmp_path / "r") as owner:
        second = LocalRedisServer(tmp_path / "r").start()
        assert second.url == owner.url and not second.owned
        redis.Redis.from_url(owner.url).set("kept", "1")
        second.stop()
        assert redis.Redis.from_url(owner.url).ping()  # the owner's lease still holds it
    # Restarting on the same folder brings the data back (append-only file).
    with LocalRedisServer(tmp_path / "r") as again:
        assert redis.Redis.from_url(again.url).get("kept") == b"1"


def test_local_server_whose_port_is_taken_before_it_binds_starts_on_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port chosen for the local server may be bound by another process before the server
    binds it: it starts again on another port, and never takes the server there for its own."""
    from feature_pipelines.stores.online import local_redis

    with LocalRedisServer(tmp_path / "other") as other:
        handed = iter([int(other.url.rsplit(":", 1)[1].split("/")[0])])  # first the port `other` holds
        free_port = local_redis._free_port
        monkeypatch.setattr(local_redis, "_free_port", lambda: next(handed, None) or free_port())
        with LocalRedisServer(tmp_path / "mine") as mine:
            assert mine.url != other.url
            with redis.Redis.from_url(mine.url) as client:
                assert Path(client.config_get("dir")["dir"]) == (tmp_path / "mine").resolve()
