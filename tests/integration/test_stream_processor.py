"""The stream processor, `featurestore stream`, on the session's real redis-server and a real Delta
source on disk: pushed events change the online values of the example `transactions` set to the
exact aggregates, reach the Delta source once each, and survive kill -9 at each step; bad entries
go to the dead letters; late events reach Delta only; SIGTERM exits 0. Copied-column sets are
checked in process, through the same processor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis
from deltalake import DeltaTable, write_deltalake

from feature_pipelines import Entity, Feature, FeatureSet, Materialization, Partitions, Source
from feature_pipelines.clock import utc_now
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.catalog import Catalog, CatalogEntry, load_catalog
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.lookup import lookup
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.streaming.log import LogEntry, RedisStreamLog, dead_letter_key, stream_key
from feature_pipelines.streaming.metrics import StreamMetrics, metrics_key
from feature_pipelines.streaming.processor import StreamConfig, StreamProcessor
from tests.helpers import BIN, PROJECT_DIR

CATALOG = load_catalog(PROJECT_DIR / "feature_defs")
TRANSACTIONS = CATALOG.get("transactions")
ACCOUNTS = [f"a{i:06d}" for i in range(5)]
WINDOWS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEADLINE_S = 60


def _events(now: datetime, first: int, count: int, seed: int) -> list[dict]:
    """`count` transactions of ACCOUNTS over the 3 days before `now` (across the 1d window's edge),
    amounts in cents, ids t<first>...."""
    rng = np.random.default_rng(seed)
    return [{"transaction_id": f"t{first + i}", "account_id": ACCOUNTS[int(rng.integers(len(ACCOUNTS)))],
             "merchant_id": "m00001", "amount": round(float(rng.uniform(1, 500)), 2), "channel": "online",
             "event_time": (now - timedelta(seconds=int(rng.integers(60, 3 * 86_400)))).isoformat()}
            for i in range(count)]


def _expected(events: list[dict], account: str, at: datetime) -> dict:
    """The example set's aggregates of `account` at `at`, by brute force over the events (sums as
    the exact decimal total, the batch's DECIMAL arithmetic, then to the nearest double)."""
    mine = [(datetime.fromisoformat(e["event_time"]), e["amount"]) for e in events if e["account_id"] == account]
    if not any(t <= at for t, _ in mine):  # batch has no row before the first event
        return {name: None for name in TRANSACTIONS.feature_names}
    out = {}
    for name, width in WINDOWS.items():
        amounts = [a for t, a in mine if at - width < t <= at]
        total = float(sum((Decimal(repr(a)) for a in amounts), Decimal(0)))
        out[f"amount_sum_{name}"] = total
        out[f"txn_count_{name}"] = len(amounts)
        if name != "1d":
            out[f"amount_mean_{name}"] = total / len(amounts) if amounts else None
        if name == "7d":
            out["amount_max_7d"] = max(amounts) if amounts else None
    return out


def _online(online: RedisOnlineStore, at: datetime, feature_set: FeatureSet = TRANSACTIONS,
            accounts: list[str] = ACCOUNTS) -> dict[str, dict]:
    names = tuple(feature_set.feature_names)
    [found] = lookup(online, [FeatureSelection(feature_set, names, names)], {"account_id": accounts}, at)
    return {account: {name: found.columns[name][i] for name in names} for i, account in enumerate(accounts)}


def _source_ids(path: Path) -> list[str]:
    return DeltaTable(str(path)).to_pyarrow_table(columns=["transaction_id"]).column(0).to_pylist()


def _start(tmp_path: Path, redis_url: str, fault: str | None, tag: str,
           consumer: str = "c2") -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "REDIS_URL": redis_url, "FEATURESTORE_PROJECT_DIR": str(PROJECT_DIR),
           "FEATURESTORE_DATA_DIR": str(tmp_path / "data"), "FEATURESTORE_SOURCE_ROOT": str(tmp_path / "sources")}
    marker = tmp_path / f"fault-{tag}"
    if fault:
        env.update(FEATURESTORE_FAULT=fault, FEATURESTORE_FAULT_MARKER=str(marker))
    log = (tmp_path / f"stream-{tag}.log").open("w")
    process = subprocess.Popen([str(BIN / "featurestore"), "stream", "--consumer", consumer, "--allowed-lateness", "40d",
                                "--claim-idle", "1", "--log-every", "0.5"], cwd=PROJECT_DIR, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    return process, marker


def _wait(condition, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert process.poll() is None, f"the processor exited ({process.returncode}): {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} within {DEADLINE_S} s; log: {log.read_text()[-3000:]}"
        time.sleep(0.05)


def _kill_at_fault(process: subprocess.Popen, marker: Path, log: Path) -> None:
    """Wait until the processor stops at its fault point, then kill -9 it there."""
    _wait(marker.exists, "the processor reached its fault point", process, log)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    marker.unlink()


def test_the_processor_applies_exactly_once_across_kills(tmp_path: Path, redis_url: str,
                                                         online_store: RedisOnlineStore) -> None:
    client = redis.Redis.from_url(redis_url)
    now = utc_now()
    # The Delta source holds history already (inside the windows), partitioned by day like the
    # example's: each entity's first streamed value must count it, as batch does.
    source_path = tmp_path / "sources" / "transactions"
    old = _events(now - timedelta(days=5), 900, 8, seed=3)
    table = pa.table({**{c: [e[c] for e in old] for c in ("transaction_id", "account_id", "merchant_id", "amount",
                                                           "channel")},
                      "event_time": pa.array([datetime.fromisoformat(e["event_time"]) for e in old],
                                             pa.timestamp("us", tz="UTC")),
                      "event_date": [e["event_time"][:10] for e in old]})
    write_deltalake(str(source_path), table, partition_by=["event_date"])
    store = FeatureStore(CATALOG, DeltaOfflineStore(str(tmp_path / "offline")), online_store)
    first = _events(now, 0, 30, seed=1)
    store.push("transactions", first)

    # 1. killed once the micro-batch is online, before the Delta append.
    process, marker = _start(tmp_path, redis_url, "stream.after_online", "1", consumer="c1")
    _kill_at_fault(process, marker, tmp_path / "stream-1.log")
    assert _online(online_store, now) == {a: _expected(old + first, a, now) for a in ACCOUNTS}
    history = [e["transaction_id"] for e in old]
    assert sorted(_source_ids(source_path)) == sorted(history)
    # 2. another consumer claims what c1 held (idle for --claim-idle 1 s) and applies it again; killed
    # after the Delta append, before the acknowledgement.
    process, marker = _start(tmp_path, redis_url, "stream.after_append", "2")
    _kill_at_fault(process, marker, tmp_path / "stream-2.log")
    assert sorted(_source_ids(source_path)) == sorted([*history, *(e["transaction_id"] for e in first)])
    assert client.xlen(stream_key("transactions")) == 30  # not acknowledged, so not trimmed

    # Meanwhile: more events, one of them delivered twice by its producer, one 50 days late, and an
    # entry from another producer that is no valid event.
    second = _events(now, 30, 20, seed=2)
    late = {**second[0], "transaction_id": "t-late", "event_time": (now - timedelta(days=50)).isoformat()}
    store.push("transactions", [*second, first[3], late])
    bad_id = client.xadd(stream_key("transactions"), {"event": json.dumps({**first[0], "amount": "lots"})}).decode()

    # 3. c2 restarted; SIGTERM while it holds its first micro-batch (its own pending one): it finishes
    # that batch, acknowledged, and exits 0 without reading more.
    process, marker = _start(tmp_path, redis_url, "stream.after_online", "3")
    _wait(marker.exists, "the processor reached its fault point", process, tmp_path / "stream-3.log")
    process.send_signal(signal.SIGTERM)
    marker.unlink()
    assert process.wait(timeout=DEADLINE_S) == 0, (tmp_path / "stream-3.log").read_text()
    assert client.xpending(stream_key("transactions"), "featurestore")["pending"] == 0
    assert client.xlen(stream_key("transactions")) == 23  # the batch in hand was trimmed, the rest never read

    # 4. restarted without faults: it catches up, then SIGTERM ends it with 0.
    log = tmp_path / "stream-4.log"
    process, _ = _start(tmp_path, redis_url, None, "4")
    _wait(lambda: client.xlen(stream_key("transactions")) == 0, "the log was applied and trimmed", process, log)
    _wait(lambda: client.hexists(metrics_key("featurestore"), "transactions:lag_at"), "the lag was measured", process,
          log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE_S) == 0, log.read_text()

    applied = old + first + second
    for at in (utc_now(), now + timedelta(days=1, seconds=30), now + timedelta(days=2, hours=12),
               now + timedelta(days=8)):
        assert _online(online_store, at) == {a: _expected(applied, a, at) for a in ACCOUNTS}, at
    ids = _source_ids(source_path)
    assert sorted(ids) == sorted(["t-late", *(e["transaction_id"] for e in applied)])  # each once
    dead = client.xrange(dead_letter_key("transactions"))
    assert [(fields[b"entry"].decode(), fields[b"group"].decode()) for _, fields in dead] == [(bad_id, "featurestore")]
    assert b"event.amount must be a finite number" in dead[0][1][b"reason"]
    assert f"refused entry {bad_id} of source 'transactions'" in log.read_text()
    metrics = {k.decode(): v.decode() for k, v in client.hgetall(metrics_key("featurestore")).items()}
    assert (metrics["transactions_v1:late"], metrics["transactions:refused"]) == ("1", "1")
    assert metrics["transactions:lag_entries"] == "0"
    assert '"stream_processor"' in log.read_text()  # the periodic JSON line
    client.close()


PROFILE = Source(name="profiles", path="profiles", timestamp="updated_at", event_id="change_id",
                 columns={"change_id": "int64", "account_id": "string", "limit": "float64", "segment": "string",
                          "updated_at": "timestamp"})
LATEST_PROFILE = FeatureSet(
    name="latest_profile", version=1, entities=[Entity("account_id", "string")], source=PROFILE,
    features=[Feature("limit", "float64"), Feature("segment", "string")], partitions=Partitions("daily", "2024-01-01"),
    materialization=Materialization(stream=True))


def test_copied_columns_take_the_newest_event_and_late_ones_reach_delta_only(tmp_path: Path, redis_url: str,
                                                                             online_store: RedisOnlineStore) -> None:
    catalog = Catalog([CatalogEntry(LATEST_PROFILE, tmp_path / "profiles.py")])
    client = redis.Redis.from_url(redis_url)
    events = RedisStreamLog(client, redis_url)
    now = utc_now()

    def change(i: int, account: str, age: timedelta, limit: float) -> dict:
        return {"change_id": i, "account_id": account, "limit": limit, "segment": f"s{i}",
                "updated_at": (now - age).isoformat()}

    pushed = [change(1, "a1", timedelta(minutes=5), 100.0), change(2, "a1", timedelta(minutes=9), 200.0),
              change(3, "a2", timedelta(minutes=1), 300.0), change(4, "a2", timedelta(hours=2), 400.0),
              change(5, "a3", timedelta(hours=3), 500.0)]  # late: beyond the hour allowed
    FeatureStore(catalog, DeltaOfflineStore(str(tmp_path / "offline")), online_store).push("profiles", pushed)
    client.xadd(stream_key("profiles"), {"event": "not json"})
    client.xadd(stream_key("profiles"), {"other": "field"})
    processor = StreamProcessor(catalog, events, online_store, str(tmp_path / "sources"), None,
                                StreamConfig(consumer="c1", lateness_us=3_600_000_000),
                                StreamMetrics(client, "featurestore"))
    assert processor.step(processor.sources[0]) == 7
    values = _online(online_store, now, LATEST_PROFILE, ["a1", "a2", "a3"])
    assert values == {"a1": {"limit": 100.0, "segment": "s1"}, "a2": {"limit": 300.0, "segment": "s3"},
                      "a3": {"limit": None, "segment": None}}  # late events are not applied online
    assert sorted(_profile_ids(tmp_path)) == [1, 2, 3, 4, 5]  # but they reach the Delta source
    metrics = {k.decode(): int(v) for k, v in client.hgetall(metrics_key("featurestore")).items()}
    assert metrics == {"latest_profile_v1:applied": 3, "latest_profile_v1:late": 2, "profiles:refused": 2,
                       "profiles:appended": 5}
    reasons = [fields[b"reason"].decode() for _, fields in client.xrange(dead_letter_key("profiles"))]
    assert reasons == ["event is a string, not an object of the columns of source 'profiles' (change_id (int64), "
                       "account_id (string), limit (float64), segment (string), updated_at (timestamp)); send one "
                       "object per event.", "event is null, not an object of the columns of source 'profiles' "
                       "(change_id (int64), account_id (string), limit (float64), segment (string), updated_at "
                       "(timestamp)); send one object per event."]
    # Applied again (a redelivery): nothing changes, nothing is appended twice.
    processor.process(processor.sources[0], [LogEntry(f"{i + 1}-0", event) for i, event in enumerate(pushed)])
    assert _online(online_store, now, LATEST_PROFILE, ["a1", "a2", "a3"]) == values
    assert sorted(_profile_ids(tmp_path)) == [1, 2, 3, 4, 5] and client.xlen(stream_key("profiles")) == 0
    client.close()


def _profile_ids(tmp_path: Path) -> list[int]:
    return DeltaTable(str(tmp_path / "sources" / "profiles")).to_pyarrow_table(columns=["change_id"]).column(0).to_pylist()


def test_processes_of_one_group_share_the_work_and_lose_no_event_on_one_entity(
        tmp_path: Path, redis_url: str, online_store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two consumers of one group write the same entity's state: the one that read an older state
    (held at a fault point until the other has written) is refused by the store and merges again."""
    marker = tmp_path / "fault"
    monkeypatch.setenv("FEATURESTORE_FAULT", "stream.before_state_write")
    monkeypatch.setenv("FEATURESTORE_FAULT_MARKER", str(marker))
    now = utc_now()
    pushed = [{**event, "account_id": ACCOUNTS[0]} for event in _events(now, 0, 60, seed=5)]
    FeatureStore(CATALOG, DeltaOfflineStore(str(tmp_path / "offline")), online_store).push("transactions", pushed)
    stop = threading.Event()
    processors, clients = [], []
    for name in ("c1", "c2"):
        client = redis.Redis.from_url(redis_url)
        clients.append(client)
        processors.append(StreamProcessor(CATALOG, RedisStreamLog(client, redis_url), RedisOnlineStore(client, redis_url),
                                          str(tmp_path / "sources"), None, StreamConfig(consumer=name, batch_size=3,
                                                                                 lateness_us=40 * 86_400_000_000),
                                          StreamMetrics(client, "featurestore")))
    errors: list[BaseException] = []

    def run(processor: StreamProcessor) -> None:
        try:
            processor.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=run, args=(p,)) for p in processors]
    deadline = time.monotonic() + DEADLINE_S
    try:
        threads[0].start()  # c1 reads a micro-batch and is held before it writes
        while not marker.exists():
            assert not errors and time.monotonic() < deadline, errors or "c1 never reached its fault point"
            time.sleep(0.01)
        threads[1].start()  # c2 (past the point, which holds once) writes the same entity meanwhile
        while not processors[1].metrics.totals["transactions_v1:applied"]:
            assert not errors and time.monotonic() < deadline, errors or "c2 wrote nothing while c1 was held"
            time.sleep(0.01)
        marker.unlink()  # c1 writes now, its state read before c2's write: refused, merged again
        while clients[0].xlen(stream_key("transactions")):
            assert not errors, errors
            assert time.monotonic() < deadline, "the log was not applied in time"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=DEADLINE_S)
    assert not errors, errors
    shares = [p.metrics.totals["transactions_v1:applied"] for p in processors]
    assert sum(shares) == 60 and min(shares) > 0, shares  # both worked
    assert _online(online_store, now, accounts=ACCOUNTS[:1]) == {ACCOUNTS[0]: _expected(pushed, ACCOUNTS[0], now)}
    assert processors[0].metrics.totals["transactions_v1:retried"] >= 1
    for client in clients:
        client.close()


def test_an_event_ahead_of_the_processors_clock_is_read_once_its_time_comes(
        tmp_path: Path, redis_url: str, online_store: RedisOnlineStore) -> None:
    """A producer's clock runs ahead: its event is later than the processor's now. Lookups before
    the event time read nothing; from then on the event counts, with no other event to bring it."""
    client = redis.Redis.from_url(redis_url)
    ahead = utc_now() + timedelta(seconds=30)
    event = {**_events(ahead, 0, 1, seed=9)[0], "account_id": ACCOUNTS[0], "event_time": ahead.isoformat()}
    FeatureStore(CATALOG, DeltaOfflineStore(str(tmp_path / "offline")), online_store).push("transactions", [event])
    processor = StreamProcessor(CATALOG, RedisStreamLog(client, redis_url), online_store, str(tmp_path / "sources"),
                                None, StreamConfig(consumer="c1"), StreamMetrics(client, "featurestore"))
    assert processor.step(processor.sources[0]) == 1
    for at in (ahead - timedelta(microseconds=1), ahead, ahead + timedelta(days=1)):
        assert _online(online_store, at, accounts=ACCOUNTS[:1])[ACCOUNTS[0]] == _expected([event], ACCOUNTS[0], at), at
    client.close()
