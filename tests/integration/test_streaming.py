"""Pushed events and the event log, on the session's real redis-server: a push is appended all or
nothing, consumer groups read, acknowledge and claim from dead consumers, the lag is measured in
entries and seconds, trimming drops only what it is told to, and a full log refuses pushes.
`FeatureStore.push` validates before anything is appended."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import redis

from feature_pipelines.errors import EventError, EventLogError
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.streaming.events import validate_events
from feature_pipelines.streaming.log import RedisStreamLog, stream_key
from feature_pipelines.streaming.sources import NotStreamedError, UnknownSourceError
from tests.cluster_services import free_ports
from tests.helpers import PROJECT_DIR

CATALOG = load_catalog(PROJECT_DIR / "feature_defs")
SOURCE = CATALOG.get("transactions").source
KEY = stream_key("transactions")
GROUP = "processor"
T0 = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)


def events(count: int, first: int = 0) -> list[dict]:
    """`count` valid transactions of the example source, ids t<first>...."""
    return [{"transaction_id": f"t{i}", "account_id": f"a{i % 3:06d}", "merchant_id": "m00001", "amount": 1.5 * i,
             "channel": "web", "event_time": (T0 + timedelta(seconds=i)).isoformat()} for i in range(first, first + count)]


def batch(count: int, first: int = 0):
    return validate_events(SOURCE, events(count, first), ("account_id",))


@pytest.fixture()
def client(redis_url: str):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture()
def log(client: redis.Redis, redis_url: str) -> RedisStreamLog:
    return RedisStreamLog(client, redis_url)


def test_entries_hold_each_event_as_json_and_other_producers_can_write_them(log: RedisStreamLog,
                                                                            client: redis.Redis) -> None:
    ids = log.append(batch(3))
    assert len(ids) == 3 and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    raw = client.xrange(KEY)
    assert [entry_id.decode() for entry_id, _ in raw] == ids
    assert [json.loads(fields[b"event"]) for _, fields in raw] == [
        {**event, "event_time": (T0 + timedelta(seconds=i)).isoformat()} for i, event in enumerate(events(3))]
    assert raw[0][1][b"event"].startswith(b'{"transaction_id":"t0","account_id":"a000000","merchant_id":"m00001",')
    # Another producer (here redis-py, as redis-cli would) writes the same form; a consumer reads both alike.
    client.xadd(KEY, {"event": json.dumps(events(1, first=9)[0])})
    read = log.read("transactions", GROUP, "c1")
    assert [entry.event["transaction_id"] for entry in read] == ["t0", "t1", "t2", "t9"]
    assert validate_events(SOURCE, [entry.event for entry in read], ("account_id",)).events == \
        batch(3).events + batch(1, first=9).events  # the log's form is a valid push again


def test_a_push_is_appended_all_or_nothing(log: RedisStreamLog, client: redis.Redis, redis_url: str) -> None:
    """One MULTI/EXEC per push: a reader polling the log's length never sees part of a push (large
    pushes arrive in many socket reads, between which Redis serves other clients)."""
    size, pushes = 2000, 6
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        watcher = redis.Redis.from_url(redis_url)
        while not done.is_set():
            seen.append(int(watcher.xlen(KEY)))
        watcher.close()

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for push in range(pushes):
            log.append(batch(size, first=push * size))
    finally:
        done.set()
        thread.join(timeout=30)
    assert client.xlen(KEY) == size * pushes
    assert len(set(seen)) > 2, "the watcher saw too little to judge"
    assert not [n for n in seen if n % size], "a reader saw part of a push"


def test_consumer_groups_read_ack_claim_and_measure_lag(log: RedisStreamLog, client: redis.Redis) -> None:
    assert log.lag("transactions", GROUP).entries == 0  # no log yet
    ids = log.append(batch(5))
    lag = log.lag("transactions", GROUP)  # the group does not exist yet: everything is behind
    assert (lag.entries, lag.pending) == (5, 0)
    first = log.read("transactions", GROUP, "c1", count=3)
    assert [e.id for e in first] == ids[:3] and [e.event["transaction_id"] for e in first] == ["t0", "t1", "t2"]
    before_ms = _redis_ms(client)
    lag = log.lag("transactions", GROUP)
    after_ms = _redis_ms(client)
    assert (lag.entries, lag.pending) == (5, 3)
    oldest_ms = first[0].appended_ms
    assert (before_ms - oldest_ms) / 1000 <= lag.seconds <= (after_ms - oldest_ms) / 1000  # the oldest unacknowledged
    assert log.ack("transactions", GROUP, [ids[0], ids[1]]) == 2
    lag = log.lag("transactions", GROUP)
    assert (lag.entries, lag.pending) == (3, 1)
    assert lag.seconds >= (_redis_ms(client) - first[2].appended_ms) / 1000 - 1  # now t2's age

    # c1 dies holding t2. Another consumer claims it only once it has been idle long enough.
    assert log.claim("transactions", GROUP, "c2", min_idle_ms=60_000) == []
    _wait_until_idle(client, ids[2], 200)
    claimed = log.claim("transactions", GROUP, "c2", min_idle_ms=200)
    assert [(e.id, e.event["transaction_id"]) for e in claimed] == [(ids[2], "t2")]
    assert client.xpending_range(KEY, GROUP, "-", "+", 10)[0]["consumer"] == b"c2"
    rest = log.read("transactions", GROUP, "c2")
    assert [e.id for e in rest] == ids[3:] and log.read("transactions", GROUP, "c2") == []
    assert log.ack("transactions", GROUP, [ids[2], *ids[3:]]) == 3
    assert log.lag("transactions", GROUP) == type(lag)(0, 0, 0.0)
    # Two groups (two deployments) each get every entry.
    assert [e.id for e in log.read("transactions", "replica", "r1", count=10)] == ids


def test_lag_counts_entries_when_redis_cannot(log: RedisStreamLog, client: redis.Redis) -> None:
    """After a deletion among undelivered entries Redis reports no lag; it is counted instead."""
    ids = log.append(batch(6))
    log.read("transactions", GROUP, "c1", count=2)
    client.xdel(KEY, ids[3])
    assert next(g for g in client.xinfo_groups(KEY) if g["name"] == GROUP.encode())["lag"] is None
    lag = log.lag("transactions", GROUP)
    assert (lag.entries, lag.pending) == (2 + 3, 2)


def test_trimming_drops_only_entries_before_the_given_id(log: RedisStreamLog, client: redis.Redis) -> None:
    ids = log.append(batch(5))
    log.read("transactions", GROUP, "c1", count=3)
    log.ack("transactions", GROUP, ids[:2])
    assert log.trim("transactions", before=ids[2]) == 2
    assert [i.decode() for i, _ in client.xrange(KEY)] == ids[2:]
    # t2 was pending when its entry was trimmed later: a claim skips it (and Redis forgets it).
    assert log.trim("transactions", before=ids[3]) == 1
    assert log.claim("transactions", GROUP, "c2", min_idle_ms=0) == []
    assert [e.id for e in log.read("transactions", GROUP, "c2")] == ids[3:]


def test_a_full_log_refuses_pushes_and_stores_nothing(client: redis.Redis, redis_url: str) -> None:
    log = RedisStreamLog(client, redis_url, max_entries=5)
    log.append(batch(3))
    with pytest.raises(EventLogError, match=re.escape(
            "the event log of source 'transactions' holds 3 entries, and 3 more would pass its limit of 5: the stream "
            "processor is behind or not running. Nothing of this push was stored; push again once it has caught up "
            "(the limit: FEATURESTORE_STREAM_MAX_ENTRIES).")):
        log.append(batch(3, first=3))
    assert client.xlen(KEY) == 3
    log.append(batch(2, first=3))  # up to the limit is fine
    assert client.xlen(KEY) == 5


def test_feature_store_push(tmp_path: Path, online_store: RedisOnlineStore, client: redis.Redis) -> None:
    store = FeatureStore(CATALOG, DeltaOfflineStore(str(tmp_path / "offline")), online_store)
    assert store.push("transactions", events(3)) == 3
    frame = pd.DataFrame(events(2, first=3))
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    assert store.push("transactions", frame) == 2
    assert store.push("transactions", []) == 0
    stored = [json.loads(fields[b"event"]) for _, fields in client.xrange(KEY)]
    assert [e["transaction_id"] for e in stored] == ["t0", "t1", "t2", "t3", "t4"]
    assert stored[4]["event_time"] == "2024-03-01T12:00:04+00:00"
    bad = events(4, first=10)
    bad[2]["event_time"] = "2024-03-01T12:00:00"  # naive
    with pytest.raises(EventError, match=re.escape("events[2].event_time \"2024-03-01T12:00:00\" has no time zone")):
        store.push("transactions", bad)
    assert client.xlen(KEY) == 5  # none of the refused batch, not even the good events before the bad one
    with pytest.raises(UnknownSourceError, match="no feature set reads a source named 'payments'"):
        store.push("payments", events(1))
    with pytest.raises(NotStreamedError, match=re.escape("set materialization=Materialization(stream=True) on one of "
                                                         "['accounts_v1']")):
        store.push("accounts", [{"account_id": "a1"}])


def test_redis_down_refuses_a_push_naming_it(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_ports()[0]}/0"  # nothing listens there
    store = FeatureStore(CATALOG, DeltaOfflineStore(str(tmp_path / "offline")),
                         RedisOnlineStore.from_url(url, socket_timeout=2, retries=0))
    with pytest.raises(EventLogError, match=re.escape(
            f"appending 2 event(s) to the event log of source 'transactions' in Redis {url} failed: ")) as refused:
        store.push("transactions", events(2))
    assert str(refused.value).endswith("Nothing of this push was stored; push again once Redis is reachable (REDIS_URL).")


def test_trimming_what_every_group_acknowledged_keeps_what_any_group_needs(log: RedisStreamLog,
                                                                           client: redis.Redis) -> None:
    ids = log.append(batch(6))
    assert log.trim_acknowledged("transactions") == 0  # no group has read: nothing is acknowledged
    log.read("transactions", GROUP, "c1", count=4)
    log.ack("transactions", GROUP, [ids[0], ids[1], ids[3]])  # ids[2] still pending
    log.read("transactions", "replica", "r1", count=2)
    log.ack("transactions", "replica", ids[:2])
    assert log.trim_acknowledged("transactions") == 2
    log.read("transactions", "replica", "r1", count=10)
    log.ack("transactions", "replica", ids[2:])
    assert log.trim_acknowledged("transactions") == 0  # GROUP still holds ids[2] and never read ids[4:]
    log.ack("transactions", GROUP, [ids[2]])
    assert log.trim_acknowledged("transactions") == 2 and [i.decode() for i, _ in client.xrange(KEY)] == ids[4:]
    # A restarted consumer reads what it held and never acknowledged, then the rest.
    log.read("transactions", GROUP, "c1", count=1)
    assert [e.id for e in log.read("transactions", GROUP, "c1", own_pending=True)] == [ids[4]]
    assert [e.id for e in log.read("transactions", GROUP, "c1")] == [ids[5]]


def _redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def _wait_until_idle(client: redis.Redis, entry_id: str, idle_ms: int) -> None:
    deadline = datetime.now(timezone.utc) + timedelta(seconds=10)
    while client.xpending_range(KEY, GROUP, entry_id, entry_id, 1)[0]["time_since_delivered"] <= idle_ms:
        assert datetime.now(timezone.utc) < deadline, f"entry {entry_id} never became idle"
        threading.Event().wait(0.02)
