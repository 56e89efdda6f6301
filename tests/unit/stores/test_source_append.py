"""Streamed events appended to a Delta source on disk: one commit per micro-batch, each event id
once, the table created when missing, an undeclared day partition filled; and read back per
entity for a rolling state to start from."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from feature_pipelines import Source
from feature_pipelines.spec.durations import epoch_micros
from feature_pipelines.stores.offline.source_append import append_events
from feature_pipelines.stores.offline.source_history import recent_events

SOURCE = Source(name="payments", path="payments", timestamp="event_time", event_id="payment_id",
                columns={"payment_id": "string", "account_id": "string", "amount": "float64", "event_time": "timestamp"})
T0 = datetime(2024, 3, 1, 23, 30, tzinfo=timezone.utc)


def _events(ids: list[int], minutes: int = 20) -> list[dict]:
    return [{"payment_id": f"p{i}", "account_id": f"a{i % 2}", "amount": float(i),
             "event_time": (T0 + timedelta(minutes=minutes * i)).isoformat()} for i in ids]


def _rows(root: Path) -> list[tuple]:
    table = DeltaTable(str(root / "payments")).to_pyarrow_table().to_pylist()
    return sorted((row["payment_id"], row.get("event_date")) for row in table)


def test_a_micro_batch_is_one_commit_and_each_event_id_is_appended_once(tmp_path: Path) -> None:
    assert append_events(SOURCE, str(tmp_path), _events([0, 1, 1])) == 2  # creates the table; p1 sent twice
    table = DeltaTable(str(tmp_path / "payments"))
    assert table.version() == 0 and table.schema().to_arrow().field("event_time").type == pa.timestamp("us", "UTC")
    assert append_events(SOURCE, str(tmp_path), _events([1, 2, 3])) == 2  # p1 again: skipped
    assert append_events(SOURCE, str(tmp_path), _events([0, 2])) == 0  # a micro-batch applied again
    assert DeltaTable(str(tmp_path / "payments")).version() == 1  # one commit per batch with new events, none else
    assert _rows(tmp_path) == [("p0", None), ("p1", None), ("p2", None), ("p3", None)]


def test_an_undeclared_day_partition_gets_the_event_times_utc_date(tmp_path: Path) -> None:
    first = pa.table({"payment_id": ["p9"], "account_id": ["a1"], "amount": [9.0],
                      "event_time": pa.array([T0], pa.timestamp("us", tz="UTC")), "event_date": ["2024-03-01"]})
    write_deltalake(str(tmp_path / "payments"), first, partition_by=["event_date"])
    assert append_events(SOURCE, str(tmp_path), _events([0, 1, 2])) == 3
    assert _rows(tmp_path) == [("p0", "2024-03-01"), ("p1", "2024-03-01"), ("p2", "2024-03-02"), ("p9", "2024-03-01")]


def test_recent_events_of_some_entities(tmp_path: Path) -> None:
    assert recent_events(SOURCE, str(tmp_path), ["account_id"], [("a0",)], 0, ["amount"]) is None  # no table yet
    append_events(SOURCE, str(tmp_path), _events(list(range(8))))
    after = epoch_micros(T0 + timedelta(minutes=40))  # p0..p2 are at or before it
    rows = recent_events(SOURCE, str(tmp_path), ["account_id"], [("a1",)], after, ["amount"])
    assert sorted(rows.column("payment_id").to_pylist()) == ["p3", "p5", "p7"]
    times = dict(zip(rows.column("payment_id").to_pylist(), rows.column("event_time").to_pylist()))
    assert times["p3"] == epoch_micros(T0 + timedelta(minutes=60))


def test_recent_events_of_entities_keyed_by_several_columns_and_a_date(tmp_path: Path) -> None:
    daily = Source(name="daily", path="daily", timestamp="event_time", event_id="payment_id",
                   columns={"payment_id": "int64", "account_id": "string", "day": "date", "event_time": "timestamp"})
    events = [{"payment_id": i, "account_id": f"a{i % 2}", "day": f"2024-03-0{1 + i % 3}",
               "event_time": (T0 + timedelta(minutes=i)).isoformat()} for i in range(12)]
    append_events(daily, str(tmp_path), events)
    rows = recent_events(daily, str(tmp_path), ["account_id", "day"], [("a1", "2024-03-02")], 0, [])
    assert sorted(rows.column("payment_id").to_pylist()) == [e["payment_id"] for e in events
                                                               if (e["account_id"], e["day"]) == ("a1", "2024-03-02")]
