"""The byte layout of one online value, chosen for fast bulk decoding.

    <ts: 20 ASCII digits, microseconds since the epoch> "|" <null bitmap> <numbers> <JSON of the rest>
    <ts> "+" <null bitmap> <numbers> <JSON of the rest> <valid_until: 20 ASCII digits>

The second form is a streamed row (see `stream_state.py`): its values hold until `valid_until`,
the next instant at which an aggregate changes, after which a lookup evaluates the entity's
rolling state instead. Rows published from the offline store have the first form.

Numbers (ints and bools as int64, floats as float64) are fixed-width little-endian, so the heads
of a whole MGET reply decode as one NumPy array, straight into one array per type with a row per
feature. Strings, dates and timestamps follow as a JSON array (one `json.loads` per reply). The
ts prefix is plain digits so the Lua script can compare it as a string.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.spec.feature_set import FeatureSet

TS_WIDTH = 20
PLAIN, UNTIL = b"|", b"+"  # the byte after ts: without, or with a valid_until at the end
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INTEGER = {"int64", "int32", "bool"}
_FLOAT = {"float64", "float32"}


@dataclass
class DecodedValues:
    """Values of many entities of one feature set, column by column, in the entities' order.

    Numbers stay in NumPy arrays of their own type, one row per feature (the layout a pandas block
    has); `lists` and `blocks` give the columns as Python values or as typed arrays.
    """

    codec: "RowCodec"
    ts_micros: np.ndarray  # (entities,) int64; -1 where nothing is stored
    floats: np.ndarray  # (float features, entities) float64; NaN where null
    integers: np.ndarray  # (int and bool features, entities) int64; 0 where null
    nulls: np.ndarray  # (numeric features, entities) bool, in RowCodec.numeric order
    other: list[list]  # per string, date or timestamp feature: values (ISO strings for times), None where null
    valid_until_micros: np.ndarray  # (entities,) int64; -1 where the row holds no valid_until (or nothing is stored)

    def hide(self, rows: np.ndarray) -> None:
        """Make every value of the entities where `rows` (bool) is true null, in place."""
        if not rows.any():
            return
        self.nulls[:, rows] = True
        self.floats[:, rows] = np.nan
        self.integers[:, rows] = 0
        where = np.flatnonzero(rows).tolist()
        for column in self.other:
            for i in where:
                column[i] = None

    def put(self, rows: np.ndarray, fresh: "DecodedValues") -> None:
        """Take the values of `fresh` (decoded by the same codec, one per index in `rows`) for
        those entities, in place."""
        self.ts_micros[rows] = fresh.ts_micros
        self.valid_until_micros[rows] = fresh.valid_until_micros
        self.floats[:, rows] = fresh.floats
        self.integers[:, rows] = fresh.integers
        self.nulls[:, rows] = fresh.nulls
        for column, values in zip(self.other, fresh.other):
            for i, value in zip(rows.tolist(), values):
                column[i] = value

    def lists(self, features: Sequence[str]) -> list[list]:
        """The values of each feature as Python objects (float, int, bool, str), None where null."""
        plan = self.codec.plan(features)
        out: list = [None] * len(features)
        for kind, rows, positions, null_rows in plan.numeric_groups:
            values = self.floats if kind == "f" else self.integers
            picked = values if rows is None else values[rows]
            if kind == "b":
                picked = picked.astype(bool)
            nulls = self.nulls if null_rows is None else self.nulls[null_rows]
            rows_of, cells = np.nonzero(nulls)
            many = len(cells) * 8 > nulls.size
            if many:  # None into an object array, so the lists still come out in one call
                picked = picked.astype(object)
                picked[nulls] = None
            columns = picked.tolist()
            if not many:  # a few None put in place
                for row, cell in zip(rows_of.tolist(), cells.tolist()):
                    columns[row][cell] = None
            for position, column in zip(positions, columns):
                out[position] = column
        for position, j in plan.other:
            out[position] = list(self.other[j])
        return out

    def blocks(self, features: Sequence[str]) -> list[tuple[list[int], np.ndarray]]:
        """The features as typed 2-D arrays, one row per feature (positions in `features`), of the
        type a list of their values takes in NumPy and pandas: float64 with NaN for nulls; int64 and
        bool without nulls (with some: float64 with NaN, object with None); object for strings
        and for a feature null everywhere; float64 when there are no entities."""
        plan = self.codec.plan(features)
        count = self.ts_micros.shape[0]
        if count == 0:
            return [(list(range(len(features))), np.empty((len(features), 0)))]
        out: list[tuple[list[int], np.ndarray]] = []
        empty: list[int] = []
        for kind, rows, positions, null_rows in plan.numeric_groups:
            nulls = self.nulls if null_rows is None else self.nulls[null_rows]
            values = self.floats if kind == "f" else self.integers
            picked = values if rows is None else values[rows]
            counts = np.count_nonzero(nulls, axis=1)
            if not counts.any():  # no nulls: the usual case, typed as stored
                out.append((positions, picked.astype(bool) if kind == "b" else picked))
                continue
            if kind == "f":
                groups = [(counts < count, picked)]  # NaN already where null
            else:
                plain = counts == 0
                groups = [(plain, picked.astype(bool) if kind == "b" else picked)]
                some = ~plain & (counts < count)
                if some.any():  # as pandas types a list of ints and None, or of bools and None
                    mixed = picked.astype(np.float64) if kind == "i" else picked.astype(bool).astype(object)
                    mixed[nulls] = np.nan if kind == "i" else None
                    groups.append((some, mixed))
            every = counts == count
            if every.any():
                empty += [p for p, e in zip(positions, every.tolist()) if e]
            for chosen, block in groups:
                if chosen.all():
                    out.append((positions, block))
                elif chosen.any():
                    out.append(([p for p, c in zip(positions, chosen.tolist()) if c], block[chosen]))
        if plan.other or empty:
            positions = [p for p, _ in plan.other] + empty
            objects = np.empty((len(positions), count), dtype=object)
            for row, (_, j) in enumerate(plan.other):
                objects[row] = self.other[j]
            out.append((positions, objects))  # the rows of `empty` are None already
        return out


@dataclass(frozen=True)
class _Plan:
    """Where the requested features are in a DecodedValues (cached per codec and request)."""

    # (kind "f"/"i"/"b", rows of floats or integers (None: all, in order), positions, rows of nulls (None: all))
    numeric_groups: tuple[tuple[str, np.ndarray | None, list[int], np.ndarray | None], ...]
    other: tuple[tuple[int, int], ...]  # (position, index into DecodedValues.other)


class RowCodec:
    """Encodes and decodes the online values of one feature set version."""

    def __init__(self, feature_set: FeatureSet):
        self.numeric = [f for f in feature_set.features if f.dtype in _INTEGER | _FLOAT]
        self.other = [f for f in feature_set.features if f.dtype not in _INTEGER | _FLOAT]
        self._null_bytes = (len(self.numeric) + 7) // 8
        codes = "".join("q" if f.dtype in _INTEGER else "d" for f in self.numeric)
        self._struct = struct.Struct("<" + codes)
        # A value's fixed-width head: ts digits, "|", null bitmap, one 8-byte slot per number.
        self._head = np.dtype([("ts", f"S{TS_WIDTH}"), ("bar", "S1"), ("nulls", "u1", (self._null_bytes,)),
                               ("numbers", "<u8", (len(self.numeric),))])
        self._float_rows = np.array([i for i, f in enumerate(self.numeric) if f.dtype in _FLOAT], dtype=np.intp)
        self._integer_rows = np.array([i for i, f in enumerate(self.numeric) if f.dtype in _INTEGER], dtype=np.intp)
        # feature -> (kind, row in floats/integers/other, row in nulls)
        self._slots: dict[str, tuple[str, int, int]] = {}
        for i, f in enumerate(self.numeric):
            if f.dtype in _FLOAT:
                self._slots[f.name] = ("f", int(np.flatnonzero(self._float_rows == i)[0]), i)
            else:
                self._slots[f.name] = ("b" if f.dtype == "bool" else "i", int(np.flatnonzero(self._integer_rows == i)[0]), i)
        for j, f in enumerate(self.other):
            self._slots[f.name] = ("o", j, -1)
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def plan(self, features: Sequence[str]) -> _Plan:
        """Where each of `features` is, grouped by kind; built once per tuple of features."""
        key = tuple(features)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(key)
        return plan

    def _make_plan(self, features: tuple[str, ...]) -> _Plan:
        groups = []
        for kind, size in (("f", len(self._float_rows)), ("i", len(self._integer_rows)), ("b", len(self._integer_rows))):
            picked = [(p, self._slots[name]) for p, name in enumerate(features) if self._slots[name][0] == kind]
            if not picked:
                continue
            rows = [slot[1] for _, slot in picked]
            null_rows = [slot[2] for _, slot in picked]
            whole = rows == list(range(size)) and null_rows == list(range(len(self.numeric)))
            groups.append((kind, None if rows == list(range(size)) else np.array(rows, dtype=np.intp),
                           [p for p, _ in picked], None if whole else np.array(null_rows, dtype=np.intp)))
        other = tuple((p, self._slots[name][1]) for p, name in enumerate(features) if self._slots[name][0] == "o")
        return _Plan(tuple(groups), other)

    def encode(self, ts: datetime, record: dict[str, Any]) -> bytes:
        if ts.tzinfo is None:
            raise OnlineStoreError(f"timestamp {ts!r} cannot be published: it must be UTC-aware.")
        delta = ts - _EPOCH
        return self.encode_micros((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds, record)

    def encode_micros(self, micros: int, record: Mapping[str, Any], valid_until_micros: int | None = None) -> bytes:
        """The value of `record` at `micros` (its ts); with `valid_until_micros`, a streamed row."""
        if micros < 0:
            raise OnlineStoreError(f"timestamp {(_EPOCH + timedelta(microseconds=micros)).isoformat()} cannot be "
                                   "published: it is before 1970.")
        nulls = 0
        numbers = []
        for i, feature in enumerate(self.numeric):
            value = record.get(feature.name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                nulls |= 1 << i
                numbers.append(0)
            else:
                numbers.append(int(value) if feature.dtype in _INTEGER else float(value))
        bar = PLAIN if valid_until_micros is None else UNTIL
        head = b"%020d" % micros + bar + nulls.to_bytes(self._null_bytes, "little")
        body = self._struct.pack(*numbers)
        if self.other:
            body += json.dumps([_jsonable(record.get(f.name)) for f in self.other], separators=(",", ":")).encode()
        return head + body if valid_until_micros is None else head + body + b"%020d" % valid_until_micros

    def _split(self, values: Sequence[bytes]) -> tuple[bytes, list, np.ndarray | None]:
        """The fixed-width heads of `values` joined, their JSON tails parsed (one document), and
        their valid_until (-1 where none; None when no value has one, the usual case)."""
        width = self._head.itemsize
        if not self.other:
            joined = b"".join(values)
            if len(joined) == width * len(values):
                return joined, [], None
            if len(joined) == (width + TS_WIDTH) * len(values):  # streamed rows only
                rows = np.frombuffer(joined, dtype=[("head", f"V{width}"), ("until", f"S{TS_WIDTH}")])
                return rows["head"].tobytes(), [], rows["until"].astype(np.int64)
            return b"".join([v[:width] for v in values]), [], np.array([self._until(v) for v in values], dtype=np.int64)
        heads = b"".join([v[:width] for v in values])
        if UNTIL not in heads[TS_WIDTH::width]:
            return heads, json.loads(b"[" + b",".join([v[width:] for v in values]) + b"]") if values else [], None
        streamed = [v[TS_WIDTH:TS_WIDTH + 1] == UNTIL for v in values]
        tails = [v[width:-TS_WIDTH] if s else v[width:] for v, s in zip(values, streamed)]
        untils = np.array([int(v[-TS_WIDTH:]) if s else -1 for v, s in zip(values, streamed)], dtype=np.int64)
        return heads, json.loads(b"[" + b",".join(tails) + b"]"), untils

    def _until(self, value: bytes) -> int:
        """The valid_until of one value of a set without JSON tails (-1: none)."""
        width = self._head.itemsize
        if len(value) == width:
            return -1
        if len(value) == width + TS_WIDTH and value[TS_WIDTH:TS_WIDTH + 1] == UNTIL:
            return int(value[width:])
        raise OnlineStoreError(f"an online value does not have the layout of its feature set ({width}-byte head); "
                               "re-publish the feature set version.")

    def decode_many(self, raw: Sequence[bytes | None]) -> DecodedValues:
        """The values of an MGET reply (None where nothing is stored), column by column: the
        fixed-width heads of all values are parsed as one NumPy array, the JSON tails as one document."""
        count = len(raw)
        width = self._head.itemsize
        try:  # every entity has a value: the common case, where a None would raise TypeError
            heads, tails, untils = self._split(raw)
            found, present = True, range(count)
        except TypeError:
            found = False
            present = [i for i, value in enumerate(raw) if value is not None]
            heads, tails, untils = self._split([raw[i] for i in present])
        if len(heads) != width * len(present):
            raise OnlineStoreError(f"an online value does not have the layout of its feature set ({width}-byte head); "
                                   "re-publish the feature set version.")
        head = np.frombuffer(heads, dtype=self._head)
        stored_ts = head["ts"].astype(np.int64)
        packed = head["nulls"]
        some_null = bool(packed.any())
        if some_null:
            bits = np.unpackbits(packed, axis=1, count=len(self.numeric), bitorder="little")
            stored_nulls = np.ascontiguousarray(bits.T).view(bool)
        else:  # no value is null
            stored_nulls = np.zeros((len(self.numeric), len(present)), dtype=bool)
        numbers = head["numbers"].T
        floats = numbers[self._float_rows].view(np.float64)
        integers = numbers[self._integer_rows].view(np.int64)
        valid_until = np.full(count, -1, dtype=np.int64)
        if found:
            ts, nulls = stored_ts, stored_nulls
            if untils is not None:
                valid_until = untils
        else:
            ts = np.full(count, -1, dtype=np.int64)
            ts[present] = stored_ts
            if untils is not None:
                valid_until[present] = untils
            nulls = np.ones((len(self.numeric), count), dtype=bool)
            nulls[:, present] = stored_nulls
            floats, stored_floats = np.zeros((len(self._float_rows), count)), floats
            floats[:, present] = stored_floats
            integers, stored_integers = np.zeros((len(self._integer_rows), count), dtype=np.int64), integers
            integers[:, present] = stored_integers
        if len(self._float_rows) and (some_null or not found):
            np.putmask(floats, nulls[self._float_rows], np.nan)
        other: list[list] = []
        if self.other:
            by_feature = list(zip(*tails)) if tails else [()] * len(self.other)
            for column in by_feature:
                if found:
                    other.append(list(column))
                else:
                    full: list = [None] * count
                    for i, value in zip(present, column):
                        full[i] = value
                    other.append(full)
        return DecodedValues(self, ts, floats, integers, nulls, other, valid_until)


def micros_to_datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=timezone.utc).replace(microsecond=micros % 1_000_000)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
