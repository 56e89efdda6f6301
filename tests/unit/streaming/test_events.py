"""Pushed events are checked like a batch source: each refusal names the row and column and how to
fix it, and refuses the whole batch (nothing is returned to append)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pytest

from feature_pipelines import Source
from feature_pipelines.errors import EventError
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.streaming.events import validate_events
from feature_pipelines.streaming.sources import NotStreamedError, PushSources, UnknownSourceError
from tests.helpers import PROJECT_DIR

SOURCE = Source(name="transactions", path="transactions", timestamp="event_time", event_id="transaction_id",
                columns={"transaction_id": "string", "account_id": "string", "amount": "float64", "items": "int32",
                         "card_present": "bool", "booked": "date", "event_time": "timestamp"})
KEYS = ("account_id",)
GOOD = {"transaction_id": "t1", "account_id": "a000000", "amount": 12.5, "items": 2, "card_present": True,
        "booked": "2024-03-01", "event_time": "2024-03-01T12:00:00+01:00"}


def test_valid_events_come_back_in_the_log_format() -> None:
    events = [GOOD, {**GOOD, "transaction_id": "t2", "amount": 3, "card_present": None, "booked": None,
                     "event_time": datetime(2024, 3, 1, 11, 30, tzinfo=timezone.utc)}]
    batch = validate_events(SOURCE, events, KEYS)
    assert len(batch) == 2
    assert batch.events[0] == {**GOOD, "event_time": "2024-03-01T11:00:00+00:00"}  # UTC, with its offset
    assert batch.events[1]["amount"] == 3.0 and isinstance(batch.events[1]["amount"], float)
    assert batch.events[1]["event_time"] == "2024-03-01T11:30:00+00:00" and batch.events[1]["card_present"] is None
    assert batch.event_time_micros == (1709290800000000, 1709292600000000)
    assert batch.encoded()[0].startswith(b'{"transaction_id":"t1","account_id":"a000000","amount":12.5,')


def _bad(row: int, **change) -> list[dict]:
    """Three good events, the one at `row` changed (a None value removes the column when given as ...)."""
    events = [{**GOOD, "transaction_id": f"t{i}"} for i in range(3)]
    events[row] = {k: v for k, v in {**events[row], **change}.items() if v is not ...}
    return events


@pytest.mark.parametrize(("events", "field", "message"), [
    (_bad(1, amount="12.5"), "events[1].amount",
     "events[1].amount must be a finite number (float64), not \"12.5\" (source 'transactions' declares amount as "
     "float64)."),
    (_bad(2, items=2**31), "events[2].items", "events[2].items must be a whole number (int32), not 2147483648"),
    (_bad(0, items=True), "events[0].items", "events[0].items must be a whole number (int32), not true"),
    (_bad(0, card_present="yes"), "events[0].card_present", "must be true or false (bool), not \"yes\""),
    (_bad(1, booked="2024-03-01T10:00:00"), "events[1].booked", "must be a date written YYYY-MM-DD"),
    (_bad(1, event_time="2024-03-01T12:00:00"), "events[1].event_time",
     "events[1].event_time \"2024-03-01T12:00:00\" has no time zone; give it one, e.g. 2024-03-01T12:00:00+00:00 "
     "(source 'transactions' declares no timezone= for naive times)."),
    (_bad(2, event_time=datetime(2024, 3, 1)), "events[2].event_time", "has no time zone"),
    (_bad(2, event_time="yesterday"), "events[2].event_time", "must be an ISO 8601 time with a zone"),
    (_bad(1, account_id=None), "events[1].account_id",
     "events[1].account_id is null, but it is the entity key of source 'transactions'; give it a string."),
    (_bad(2, transaction_id=None), "events[2].transaction_id",
     "events[2].transaction_id is null, but it is the event id of source 'transactions'; give it a string."),
    (_bad(0, event_time=None), "events[0].event_time", "is null, but it is the event time of source 'transactions'"),
    (_bad(1, amount=...), "events[1].amount",
     "events[1] lacks column 'amount' (float64) of source 'transactions'; every event gives each declared column "
     "(transaction_id (string), account_id (string), amount (float64), items (int32), card_present (bool), "
     "booked (date), event_time (timestamp)), null where allowed."),
    (_bad(2, channel="web"), "events[2].channel",
     "events[2].channel is not a column of source 'transactions'; its columns are transaction_id (string), "),
    ([GOOD, "t2"], "events[1]", "events[1] is a string, not an object of the columns of source 'transactions'"),
    ({"events": [GOOD]}, "events", "events must be a list of objects (one per event), a pandas DataFrame or a pyarrow "
                                   "Table, not dict."),
], ids=["wrong type", "out of range", "bool as int", "not a bool", "time as date", "naive time string",
        "naive datetime", "not a time", "null key", "null event id", "null event time", "missing column",
        "extra column", "not an object", "not a list"])
def test_bad_events_name_row_and_column(events, field: str, message: str) -> None:
    with pytest.raises(EventError, match=re.escape(message)) as refused:
        validate_events(SOURCE, events, KEYS)
    assert refused.value.field == field
    assert str(refused.value).endswith(".") and not str(refused.value).endswith("..")


def test_frames_and_tables_are_checked_the_same() -> None:
    """pandas' NaN is a null (a nullable column), numpy scalars are plain values; a naive column is refused."""
    frame = pd.DataFrame([GOOD, {**GOOD, "transaction_id": "t2", "amount": None}])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True) + pd.Timedelta(nanoseconds=1_000_999)
    for events in (frame, pa.Table.from_pandas(frame, preserve_index=False), frame.to_dict("records")):
        batch = validate_events(SOURCE, events, KEYS)
        assert batch.events[1]["amount"] is None and batch.events[0]["items"] == 2
        # Nanoseconds are cut to microseconds, as Spark stores times.
        assert batch.column("event_time") == ["2024-03-01T11:00:00.001000+00:00"] * 2
        assert batch.event_time_micros == (1709290800001000,) * 2
    frame["event_time"] = frame["event_time"].dt.tz_localize(None)
    with pytest.raises(EventError, match=re.escape("events[0].event_time")):
        validate_events(SOURCE, frame, KEYS)


def test_a_source_with_a_declared_timezone_takes_its_naive_times() -> None:
    berlin = Source(**{**vars(SOURCE), "timezone": "Europe/Berlin"})
    batch = validate_events(berlin, [{**GOOD, "event_time": "2024-03-01T12:00:00"}], KEYS)
    assert batch.events[0]["event_time"] == "2024-03-01T11:00:00+00:00"


def test_push_sources_of_the_example_catalog() -> None:
    sources = PushSources(load_catalog(PROJECT_DIR / "feature_defs"))
    assert sources.names() == ["transactions"]
    pushed = sources.get("transactions")
    assert pushed.keys == ("account_id",) and [fs.key for fs in pushed.feature_sets] == ["transactions_v1"]
    with pytest.raises(NotStreamedError, match=re.escape(
            "source 'accounts' takes no pushed events: no feature set that reads it streams; set "
            "materialization=Materialization(stream=True) on one of ['accounts_v1'] (its source also needs "
            "event_id=...).")):
        sources.get("accounts")
    with pytest.raises(UnknownSourceError, match=re.escape(
            "no feature set reads a source named 'payments'; the sources events can be pushed to are ['transactions']")):
        sources.get("payments")
