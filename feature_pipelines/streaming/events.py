"""Pushed events, checked like a batch source: the declared columns and types, UTC-aware event
times, non-null entity keys, event id and event time.

Events come as a list of dicts (the feature server's JSON, or a Python caller's), or from Python
as a pandas DataFrame or pyarrow Table (converted here, on first use: the server never loads
either). A bad event refuses the whole batch with one error naming its row and column
(`events[3].amount`) and how to fix it, so nothing of a refused batch is applied.

The validated form is also the event log's format: each event is a JSON object of the source's
columns, event times as ISO 8601 with `+00:00`, dates as `YYYY-MM-DD` (README, "Real-time features").
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from numbers import Integral, Real
from typing import Any
from zoneinfo import ZoneInfo

from feature_pipelines.errors import EventError
from feature_pipelines.spec.durations import epoch_micros
from feature_pipelines.spec.feature_set import Source

_INT_RANGE = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}
_EXPECTED = {"string": "a string", "int64": "a whole number (int64)", "int32": "a whole number (int32)",
             "float64": "a finite number (float64)", "float32": "a finite number (float32)",
             "bool": "true or false (bool)", "date": "a date written YYYY-MM-DD",
             "timestamp": "an ISO 8601 time with a zone, e.g. 2024-03-01T12:00:00+00:00"}


@dataclass(frozen=True)
class EventBatch:
    """Validated events of one source, in the order given: each a dict of every source column,
    JSON-ready (times as ISO 8601 in UTC), with its event time in microseconds since the epoch."""

    source: Source
    events: tuple[dict[str, Any], ...]
    event_time_micros: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.events)

    def column(self, name: str) -> list[Any]:
        return [event[name] for event in self.events]

    def encoded(self) -> list[bytes]:
        """Each event as the event log stores it: compact JSON, columns in declared order."""
        return [json.dumps(event, separators=(",", ":"), allow_nan=False).encode() for event in self.events]


def validate_events(source: Source, events: Any, keys: Collection[str] = ()) -> EventBatch:
    """`events` checked against `source`'s declared columns; `keys` (the entity keys of the sets
    that stream it) must be non-null, as must the event time and the event id. Raises EventError
    naming the first bad row and column; nothing is returned for a batch with a bad event."""
    rows = _records(events)
    columns = dict(source.columns)
    required = {source.timestamp, *keys, *([source.event_id] if source.event_id else [])}
    zone = ZoneInfo(source.timezone) if source.timezone else None
    validated: list[dict[str, Any]] = []
    times: list[int] = []
    for row, event in enumerate(rows):
        if not isinstance(event, dict):
            raise EventError(f"events[{row}] is {_kind(event)}, not an object of the columns of source "
                             f"{source.name!r} ({_listed(columns)}); send one object per event", row)
        if event.keys() != columns.keys():
            _wrong_columns(source, event, row)
        clean: dict[str, Any] = {}
        for name, dtype in columns.items():
            value = event[name]
            if _is_null(value):
                if name in required:
                    what = ("event time" if name == source.timestamp else "event id" if name == source.event_id
                            else "entity key")
                    raise EventError(f"events[{row}].{name} is null, but it is the {what} of source {source.name!r}; "
                                     f"give it {_EXPECTED[dtype]}", row, name)
                clean[name] = None
                continue
            clean[name] = _checked(value, dtype, zone, source, row, name)
        validated.append(clean)
        times.append(_micros(clean[source.timestamp]))
    return EventBatch(source, tuple(validated), tuple(times))


def _records(events: Any) -> Sequence[Any]:
    """A list of event dicts, from a list, a pandas DataFrame or a pyarrow Table."""
    module = type(events).__module__.split(".")[0]
    if module == "pandas":
        import pyarrow as pa  # only a Python caller's DataFrame gets here

        # Arrow turns NaN and NaT into nulls and numpy scalars into Python values.
        return pa.Table.from_pandas(events, preserve_index=False).to_pylist()
    if module == "pyarrow":
        return events.to_pylist()
    if isinstance(events, (list, tuple)):
        return events
    raise EventError(f"events must be a list of objects (one per event), a pandas DataFrame or a pyarrow Table, not "
                     f"{type(events).__name__}")


def _wrong_columns(source: Source, event: dict, row: int) -> None:
    missing = [name for name in source.columns if name not in event]
    if missing:
        name = missing[0]
        raise EventError(f"events[{row}] lacks column {name!r} ({source.columns[name]}) of source {source.name!r}; "
                         f"every event gives each declared column ({_listed(source.columns)}), null where allowed",
                         row, name)
    extra = next(name for name in event if name not in source.columns)
    raise EventError(f"events[{row}].{extra} is not a column of source {source.name!r}; its columns are "
                     f"{_listed(source.columns)}: drop it, or declare it in the source (a new version)", row, str(extra))


def _checked(value: Any, dtype: str, zone: ZoneInfo | None, source: Source, row: int, name: str) -> Any:
    """`value` as the log stores a value of `dtype`, or EventError."""
    if dtype == "string":
        if isinstance(value, str):
            return value
    elif dtype in _INT_RANGE:
        if isinstance(value, Integral) and not isinstance(value, bool):
            low, high = _INT_RANGE[dtype]
            if low <= int(value) <= high:
                return int(value)
    elif dtype in ("float64", "float32"):
        if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif dtype == "bool":
        if isinstance(value, bool):
            return value
    elif dtype == "date":
        parsed = _date(value)
        if parsed is not None:
            return parsed.isoformat()
    elif dtype == "timestamp":
        moment = _time(value)
        if moment is not None:
            if moment.tzinfo is None:
                if zone is None:
                    raise EventError(f"events[{row}].{name} {_shown(value)} has no time zone; give it one, e.g. "
                                     f"{moment.isoformat()}+00:00 (source {source.name!r} declares no timezone= for "
                                     "naive times)", row, name)
                moment = moment.replace(tzinfo=zone)
            return moment.astimezone(timezone.utc).isoformat()
    raise EventError(f"events[{row}].{name} must be {_EXPECTED[dtype]}, not {_shown(value)} (source {source.name!r} "
                     f"declares {name} as {dtype})", row, name)


def _is_null(value: Any) -> bool:
    # NaN counts as null (pandas writes a missing float so); pyarrow has made NaT a None already.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None  # a time is not a date: say so rather than drop its time of day
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        if hasattr(value, "to_pydatetime"):  # a pandas Timestamp: to microseconds, as stored rows are
            return value.to_pydatetime(warn=False)
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _micros(iso: str) -> int:
    return epoch_micros(datetime.fromisoformat(iso))


def _listed(columns: Any) -> str:
    return ", ".join(f"{name} ({dtype})" for name, dtype in dict(columns).items())


def _shown(value: Any) -> str:
    """A caller's value in a message: as JSON where it can be, cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")
