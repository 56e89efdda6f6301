"""The exact rolling-aggregate state of one entity, kept online for streamed feature sets.

Batch rolling aggregates are exact at every instant (`compute/transforms.py`): the value at `t`
covers events with event time in `(t - w, t]`, and a row is emitted at every event time `e` and
every `e + w`. The future course of a trailing sum determines every event time and value in its
window, so no summary smaller than the events can stay exact: the state keeps each event of the
longest window (and the allowed lateness before it) as an 8-byte event-id hash, an int64 time in
microseconds and 8 bytes per aggregated column plus a null bit. It is evaluated with a vectorised
scan; per-bucket tiles would only pay for windows holding far more events than an entity has.

Sums of float columns reproduce the batch's DECIMAL(38,18) running totals: each value counts as
the decimal its shortest representation names (as Spark's cast does, through Java's
`Double.toString`), rounded to 18 places; a window's total is exact, rounded to 17 places (the
type Spark gives the difference of two running totals), then to the nearest double. When every
value of a column is a decimal of at most 15 significant digits (amounts in cents, say), the
totals are int64 sums of the values scaled by a power of ten; otherwise, Python integers.

The state's bytes (`merge` returns them, `evaluate` reads them):

    <generation: 20 ASCII digits> <header> <ids u64[n]> <ts i64[n]> <values 8 bytes[n] per
    valued column> <null bitmap per column>

The generation comes first and as digits so the store's Lua script can compare it; events are
ordered by time.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import numpy as np

from feature_pipelines.errors import SpecError
from feature_pipelines.spec.durations import micros, parse_duration
from feature_pipelines.spec.feature_set import FeatureSet

GENERATION_WIDTH = 20
_FORMAT = 1
# format, columns, events, horizon (events at or before it are dropped), newest dropped event time
_HEADER = struct.Struct("<BHIqq")
_NONE = np.iinfo(np.int64).min
_FALLBACK = -1  # a column's scale when its values need Python integers
_MAX_DIGITS = 15  # a double names every decimal of 15 significant digits uniquely
_WIDE = Context(prec=80)
_PLACES_18, _PLACES_17 = Decimal("1e-18"), Decimal("1e-17")
_INT_MAX, _INT_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def event_id_hash(ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """A stable 64-bit hash (BLAKE2b of the value's text) of each event id: the same on every
    machine and run, unlike `hash()`. Ids are compared by their text: 7 and "7" are one event."""
    values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    digests = b"".join([hashlib.blake2b(str(v).encode(), digest_size=8).digest() for v in values])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "int" (int64 values), "float" (float64 values) or "nulls" (counted only: no values)


@dataclass
class _Events:
    generation: int
    horizon: int
    dropped_max: int
    ids: np.ndarray
    ts: np.ndarray
    values: list[np.ndarray | None]  # per column, in RollingState.columns order
    nulls: list[np.ndarray]
    scales: list[int]


class RollingState:
    """Merges events into, and evaluates, the state of one entity of a feature set's rolling
    aggregates (declarative `aggregates` only)."""

    def __init__(self, feature_set: FeatureSet):
        if not feature_set.aggregates:
            raise SpecError(f"feature set {feature_set.key}: only declarative aggregates keep a rolling state.")
        dtypes = feature_set.source.columns
        compared = {a.column for a in feature_set.aggregates if a.function != "count"}
        self._columns: list[_Column] = []
        for name in sorted({a.column for a in feature_set.aggregates if a.column}):
            dtype = dtypes[name]
            if dtype in ("float64", "float32"):
                kind = "float"
            elif dtype in ("int64", "int32", "bool"):
                kind = "int"
            elif name in compared:
                raise SpecError(f"feature set {feature_set.key}: min/max of {dtype} column {name!r} cannot be "
                                "kept in a rolling state; stream numeric or bool columns only.")
            else:
                kind = "nulls"
            self._columns.append(_Column(name, kind))
        index = {c.name: i for i, c in enumerate(self._columns)}
        windows = sorted({micros(parse_duration(w, field="window")) for a in feature_set.aggregates for w in a.windows})
        self.windows_us = np.array(windows, dtype=np.int64)
        self.longest_us = windows[-1]
        position = {w: i for i, w in enumerate(windows)}
        # Per feature, in feature order: (function, column index or -1, window index, output dtype).
        self._plan: list[tuple[str, int, int, str]] = []
        out_types = {f.name: f.dtype for f in feature_set.features}
        for aggregate in feature_set.aggregates:
            for window in aggregate.windows:
                name = aggregate.feature_name(window)
                self._plan.append((aggregate.function, index[aggregate.column] if aggregate.column else -1,
                                   position[micros(parse_duration(window, field="window"))], out_types[name]))
        self.feature_names = [aggregate.feature_name(w) for aggregate in feature_set.aggregates for w in aggregate.windows]

    @property
    def columns(self) -> list[str]:
        """The source columns `merge` needs, besides event ids and times."""
        return [c.name for c in self._columns]

    def merge(self, state: bytes | None, event_ids: np.ndarray, ts_us: np.ndarray,
              columns: Mapping[str, Sequence[Any] | np.ndarray], *, keep_after_us: int) -> bytes:
        """`state` (None: empty) with the events added, as new bytes with the next generation.

        An event whose id hash is held already is not added again (delivery at least once, applied
        exactly once). Events at or before `keep_after_us` (or an earlier call's, whichever is
        later) are dropped, and only the newest dropped time is kept: evaluations are exact at
        instants from `keep_after_us` + the longest window on. Column values: NaN or None is null.
        """
        old = self._parse(state)
        horizon = max(old.horizon, int(keep_after_us))
        ids = np.asarray(event_ids, dtype=np.uint64)
        ts = np.asarray(ts_us, dtype=np.int64)
        if ids.shape != ts.shape:
            raise ValueError("event_ids and ts_us must have the same length")
        new_values, new_nulls = [], []
        for column in self._columns:
            values, nulls = self._column(column, columns[column.name], len(ids))
            new_values.append(values)
            new_nulls.append(nulls)
        fresh = _first_unseen(ids, old.ids)
        dropped_max = old.dropped_max
        late = fresh & (ts <= horizon)
        if late.any():
            dropped_max = max(dropped_max, int(ts[late].max()))
        fresh &= ts > horizon
        expired = old.ts <= horizon
        kept = slice(int(np.count_nonzero(expired)), None)  # old events are ordered by time
        if expired.any():
            dropped_max = max(dropped_max, int(old.ts[expired].max()))
        all_ts = np.concatenate([old.ts[kept], ts[fresh]])
        all_ids = np.concatenate([old.ids[kept], ids[fresh]])
        order = None
        added = ts[fresh]
        if len(added) and not (_ordered(added) and (not len(old.ts) or old.ts[-1] <= added[0])):
            order = np.lexsort((all_ids, all_ts))
            all_ts, all_ids = all_ts[order], all_ids[order]
        values: list[np.ndarray | None] = []
        nulls: list[np.ndarray] = []
        scales: list[int] = []
        for i, column in enumerate(self._columns):
            null = np.concatenate([old.nulls[i][kept], new_nulls[i][fresh]])
            value = None
            if column.kind != "nulls":
                value = np.concatenate([old.values[i][kept], new_values[i][fresh]])
            if order is not None:
                null = null[order]
                value = None if value is None else value[order]
            values.append(value)
            nulls.append(null)
            scale = 0
            if column.kind == "float":
                scale = _scale(value, null, old.scales[i], new_values[i][fresh])
            scales.append(scale)
        return self._pack(_Events(old.generation + 1, horizon, dropped_max, all_ids, all_ts, values, nulls, scales))

    def evaluate(self, state: bytes | None, at_us: int) -> tuple[list[Any], int | None, int | None]:
        """The aggregates over `(at - w, at]`, in feature order (empty: sum and count 0, the rest
        None), the greatest change instant at or before `at` (an event time or an event time
        plus a window: the `ts` of the batch row an as-of join picks at `at`; None if none), and
        the next change instant after `at` (None if the values stay as they are)."""
        events = self._parse(state)
        ts, at = events.ts, int(at_us)
        count = len(ts)
        hi = int(np.searchsorted(ts, at, side="right"))
        los = np.searchsorted(ts, at - self.windows_us, side="right")
        lo_list = los.tolist()
        sums: dict[int, list] = {}
        valid: dict[int, list[int]] = {}
        extremes: dict[tuple[str, int], list] = {}
        out: list[Any] = []
        for function, c, w, dtype in self._plan:
            lo = lo_list[w]
            if function == "count" and c < 0:
                out.append(hi - lo)
                continue
            if c not in valid:
                valid[c] = _window_totals((~events.nulls[c]).astype(np.int64), lo_list, hi)
            present = valid[c][w]
            if function == "count":
                out.append(present)
            elif function in ("sum", "mean"):
                if c not in sums:
                    sums[c] = self._sums(events, c, lo_list, hi)
                total = sums[c][w]
                if function == "sum":
                    out.append(total)
                else:
                    out.append(float(total) / present if present else None)
            else:
                if (function, c) not in extremes:
                    extremes[(function, c)] = _extremes(function, events.values[c], events.nulls[c], lo_list, hi)
                value = extremes[(function, c)][w] if present else None
                out.append(None if value is None else bool(value) if dtype == "bool" else value)
        # Change instants: event times, and event times plus each window.
        changed = [int(ts[hi - 1])] if hi else []
        changed += [int(ts[lo - 1]) + wu for lo, wu in zip(lo_list, self.windows_us.tolist()) if lo]
        if events.dropped_max != _NONE:
            changed += [events.dropped_max + wu for wu in self.windows_us.tolist() if events.dropped_max + wu <= at]
        upcoming = [int(ts[hi])] if hi < count else []
        upcoming += [int(ts[lo]) + wu for lo, wu in zip(lo_list, self.windows_us.tolist()) if lo < count]
        return out, max(changed) if changed else None, min(upcoming) if upcoming else None

    @staticmethod
    def generation(state: bytes | None) -> int:
        """How many merges made `state` (0: none)."""
        return int(state[:GENERATION_WIDTH]) if state else 0

    def _sums(self, events: _Events, c: int, lo_list: list[int], hi: int) -> list:
        values, nulls = events.values[c], events.nulls[c]
        if self._columns[c].kind == "int":
            return _window_totals(values, lo_list, hi)
        scale = events.scales[c]
        if scale != _FALLBACK:
            scaled = np.rint(values * 10.0 ** scale).astype(np.int64)
            if len(values) * 10**_MAX_DIGITS < 2**63:
                totals = _window_totals(scaled, lo_list, hi)
            else:  # an int64 running total could overflow
                totals = _window_totals(scaled.astype(object), lo_list, hi)
            return [_to_float(t, scale) for t in totals]
        start = min(lo_list) if lo_list else hi
        exact = np.zeros(hi - start + 1, dtype=object)  # running totals in units of 1e-18
        units = [0 if n else _units_18(v) for v, n in zip(values[start:hi].tolist(), nulls[start:hi].tolist())]
        exact[1:] = np.cumsum(np.array(units, dtype=object)) if units else exact[1:]
        return [_to_float_17(exact[hi - start] - exact[lo - start]) for lo in lo_list]

    def _column(self, column: _Column, raw: Sequence[Any] | np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        array = np.asarray(raw)
        if array.shape != (count,):
            raise ValueError(f"column {column.name!r} has {array.shape} values for {count} events")
        if array.dtype == object or array.dtype.kind in "USMm":
            nulls = np.array([v is None or (isinstance(v, float) and v != v) for v in array.tolist()], dtype=bool)
        elif array.dtype.kind == "f":
            nulls = np.isnan(array)
        else:
            nulls = np.zeros(count, dtype=bool)
        if column.kind == "nulls":
            return np.empty(0), nulls
        if array.dtype == object:
            array = np.array([0 if n else v for v, n in zip(array.tolist(), nulls.tolist())])
        dtype = np.float64 if column.kind == "float" else np.int64
        return np.where(nulls, 0, array).astype(dtype), nulls

    def _parse(self, state: bytes | None) -> _Events:
        columns = len(self._columns)
        if not state:
            empty = np.empty(0, dtype=np.int64)
            return _Events(0, _NONE, _NONE, np.empty(0, dtype=np.uint64), empty,
                           [None if c.kind == "nulls" else empty.astype(np.float64 if c.kind == "float" else np.int64)
                            for c in self._columns], [np.zeros(0, dtype=bool)] * columns, [0] * columns)
        generation = int(state[:GENERATION_WIDTH])
        offset = GENERATION_WIDTH
        version, stored_columns, count, horizon, dropped_max = _HEADER.unpack_from(state, offset)
        if version != _FORMAT or stored_columns != columns:
            raise ValueError("a rolling state of another layout; rebuild the feature set's online state")
        offset += _HEADER.size
        scales = list(struct.unpack_from(f"<{columns}b", state, offset))
        offset += columns
        valued = [c.kind != "nulls" for c in self._columns]
        block = np.frombuffer(state, dtype="<i8", count=(2 + sum(valued)) * count, offset=offset).reshape(2 + sum(valued), count)
        offset += block.nbytes
        ids, ts = block[0].view(np.uint64), block[1]
        values: list[np.ndarray | None] = []
        row = 2
        for column, has in zip(self._columns, valued):
            values.append(None if not has else block[row].view(np.float64) if column.kind == "float" else block[row])
            row += has
        width = (count + 7) // 8
        bits = np.frombuffer(state, dtype=np.uint8, count=width * columns, offset=offset).reshape(columns, width)
        nulls = list(np.unpackbits(bits, axis=1, count=count, bitorder="little").view(bool))
        return _Events(generation, horizon, dropped_max, ids, ts, values, nulls, scales)

    def _pack(self, events: _Events) -> bytes:
        parts = [b"%020d" % events.generation,
                 _HEADER.pack(_FORMAT, len(self._columns), len(events.ts), events.horizon, events.dropped_max),
                 struct.pack(f"<{len(self._columns)}b", *events.scales),
                 events.ids.astype("<u8").tobytes(), events.ts.astype("<i8").tobytes()]
        parts += [v.astype("<f8" if c.kind == "float" else "<i8").tobytes()
                  for c, v in zip(self._columns, events.values) if v is not None]
        parts += [np.packbits(n, bitorder="little").tobytes() for n in events.nulls]
        return b"".join(parts)


def _first_unseen(ids: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Where `ids` holds an id for the first time and `held` does not hold it."""
    if len(ids) == 1:  # the usual case: one event of an entity in a micro-batch
        return np.array([not len(held) or not (held == ids[0]).any()])
    if len(ids) <= 16:  # a few events: compare them all
        first = ~np.tril(ids[:, None] == ids[None, :], -1).any(axis=1)
        return first & ~(held[:, None] == ids[None, :]).any(axis=0) if len(held) else first
    first = np.zeros(len(ids), dtype=bool)
    first[np.unique(ids, return_index=True)[1]] = True
    return first & ~np.isin(ids, held) if len(held) else first


def _ordered(ts: np.ndarray) -> bool:
    return len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all())


def _window_totals(values: np.ndarray, lo_list: list[int], hi: int) -> list:
    """The sum of `values[lo:hi]` for each lo, from one running total."""
    running = np.zeros(len(values) + 1, dtype=values.dtype)
    np.cumsum(values, out=running[1:])
    end = running[hi]
    return (end - running[lo_list]).tolist() if lo_list else []


def _extremes(function: str, values: np.ndarray, nulls: np.ndarray, lo_list: list[int], hi: int) -> list:
    """min or max of the non-null `values[lo:hi]` for each lo (the windows share their end)."""
    start = min(lo_list)
    if start >= hi:
        return [None] * len(lo_list)
    picked = values[start:hi][::-1]
    if nulls[start:hi].any():
        if values.dtype.kind == "f":
            fill = np.inf if function == "min" else -np.inf
        else:
            fill = _INT_MAX if function == "min" else _INT_MIN
        picked = np.where(nulls[start:hi][::-1], fill, picked)
    running = (np.minimum if function == "min" else np.maximum).accumulate(picked).tolist()
    return [running[hi - lo - 1] if lo < hi else None for lo in lo_list]


def _scale(values: np.ndarray, nulls: np.ndarray, scale: int, added: np.ndarray) -> int:
    """The power of ten turning every value of a float column into an integer of at most 15
    digits, or _FALLBACK. Such an integer m names the value exactly when m / 10**scale rounds
    back to it (doubles tell 15-digit decimals apart), so it is the decimal Spark casts."""
    if scale == _FALLBACK:
        added, scale = values[~nulls], 0  # the values that forced it may be gone
    if not len(added):
        return scale
    start = scale
    while scale <= _MAX_DIGITS:
        power = 10.0**scale
        if (np.rint(added * power) / power == added).all():
            break
        scale += 1
    if scale > _MAX_DIGITS:
        return _FALLBACK
    if scale == start:
        biggest = float(np.abs(added).max())  # the others were checked at this scale
    else:
        biggest = float(np.abs(values).max())  # nulls are 0
    return scale if biggest * 10.0**scale < 10.0**_MAX_DIGITS else _FALLBACK


def _to_float(total: int, scale: int) -> float:
    """total / 10**scale, correctly rounded (as Spark casts a decimal to a double)."""
    if abs(total) < 2**53:
        return float(total) / 10.0**scale  # two exact doubles: IEEE division rounds once
    return float(Decimal(total).scaleb(-scale, _WIDE))


def _units_18(value: float) -> int:
    """The value as Spark's cast to DECIMAL(38,18) makes it, in units of 1e-18."""
    return int(Decimal(repr(value)).quantize(_PLACES_18, rounding=ROUND_HALF_UP, context=_WIDE).scaleb(18, _WIDE))


def _to_float_17(units_18: int) -> float:
    """A window total in units of 1e-18, as DECIMAL(38,17) (half up), then a double."""
    rounded = Decimal(units_18).scaleb(-18, _WIDE).quantize(_PLACES_17, rounding=ROUND_HALF_UP, context=_WIDE)
    return float(rounded)
