"""The rolling state of streamed aggregates against a brute-force reference of the batch rules
(README "Rules this project adds"): values over `(t - w, t]` at any instant, with sums of floats
as the DECIMAL(38,18) running totals make them; the change instant before and after; duplicates,
same-instant events, nulls, pruning and emptied windows."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import Aggregate
from feature_pipelines.errors import SpecError
from feature_pipelines.spec.durations import micros, parse_duration
from tests.factories import feature_set, source

from feature_pipelines.stores.online.stream_state import RollingState, event_id_hash

S = 1_000_000
COLUMNS = {"user_id": "string", "x": "float64", "n": "int64", "flag": "bool", "label": "string"}
SET = feature_set(
    "stream_kernel", features={}, source_=source(columns=COLUMNS), source_lookback="5s",
    aggregates=[
        Aggregate("sum", "x", windows=["2s", "5s"]),
        Aggregate("count", None, windows=["3s"]),
        Aggregate("count", "x", windows=["5s"]),
        Aggregate("mean", "x", windows=["2s", "5s"]),
        Aggregate("min", "x", windows=["5s"]),
        Aggregate("max", "x", windows=["2s"]),
        Aggregate("sum", "n", windows=["5s"]),
        Aggregate("mean", "n", windows=["3s"]),
        Aggregate("min", "n", windows=["2s"]),
        Aggregate("max", "flag", windows=["5s"]),
        Aggregate("count", "label", windows=["2s"]),
    ],
)
KERNEL = RollingState(SET)
WIDE = Context(prec=80)

Event = tuple[str, int, dict[str, Any]]  # (id, ts in µs, column values)


def reference(events: list[Event], at: int, horizon: int) -> tuple[list[Any], int | None, int | None]:
    """The batch definition, event by event: the first event of each id counts; events at or
    before `horizon` are pruned from the values but not from the change instants."""
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event[0], event)
    every = list(seen.values())
    kept = [e for e in every if e[1] > horizon]
    values: list[Any] = []
    windows = sorted({micros(parse_duration(w, field="w")) for a in SET.aggregates for w in a.windows})
    for aggregate in SET.aggregates:
        for window in aggregate.windows:
            w = micros(parse_duration(window, field="w"))
            inside = [e for e in kept if at - w < e[1] <= at]
            if aggregate.column is None:
                values.append(len(inside))
                continue
            present = [e[2][aggregate.column] for e in inside if e[2][aggregate.column] is not None]
            if aggregate.function == "count":
                values.append(len(present))
            elif aggregate.function in ("sum", "mean"):
                if aggregate.column == "n":
                    total: Any = sum(present)
                else:
                    exact = sum((Decimal(repr(v)).quantize(Decimal("1e-18"), ROUND_HALF_UP, WIDE) for v in present),
                                Decimal(0))
                    total = float(exact.quantize(Decimal("1e-17"), ROUND_HALF_UP, WIDE))
                if aggregate.function == "sum":
                    values.append(total)
                else:
                    values.append(float(total) / len(present) if present else None)
            else:
                picked = (min if aggregate.function == "min" else max)(present) if present else None
                values.append(picked)
    instants = {e[1] + o for e in every for o in [0, *windows]}
    before = [i for i in instants if i <= at]
    after = [i for i in instants if i > at]
    return values, max(before) if before else None, min(after) if after else None


def merged(events: list[Event], batches: list[list[Event]] | None = None, horizon: int = -1) -> bytes | None:
    state = None
    for batch in batches if batches is not None else [events]:
        if not batch:
            continue
        state = KERNEL.merge(
            state, event_id_hash([e[0] for e in batch]), np.array([e[1] for e in batch], dtype=np.int64),
            {c: np.array([e[2][c] for e in batch], dtype=object) for c in KERNEL.columns}, keep_after_us=horizon)
    return state


def same(got: list[Any], want: list[Any]) -> bool:
    """Equal, value by value and type by type (a float sum is not an int, 0 is not None)."""
    return all(type(g) is type(w) and (g == w) for g, w in zip(got, want)) and len(got) == len(want)


X_VALUES = st.one_of(st.none(), st.sampled_from([0.1, 0.2, 0.3, 19.99, -7.25, 1e-7, 1234567.891]),
                     st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(-10**6, 10**6).map(lambda i: i / 100))
EVENTS = st.lists(st.tuples(
    st.sampled_from([f"e{i}" for i in range(30)]),  # repeated ids: redelivered events
    st.integers(0, 12).map(lambda s: s * S) | st.integers(0, 12 * S),  # whole seconds: shared instants, window edges
    st.fixed_dictionaries({"x": X_VALUES, "n": st.none() | st.integers(-10**12, 10**12), "flag": st.none() | st.booleans(),
                           "label": st.none() | st.sampled_from(["a", "b"]), "user_id": st.just("u")}),
), max_size=25).map(lambda events: redelivered(events))


def redelivered(events: list[Event]) -> list[Event]:
    """A repeated id is the same event delivered again: same time and values as its first copy."""
    first: dict[str, Event] = {}
    return [first.setdefault(e[0], e) for e in events]


def probes(events: list[Event]) -> list[int]:
    """Instants at and around every edge: each e, e + w, e + w +- 1 µs, and far after."""
    edges = {e[1] + o for e in events for o in (0, 2 * S, 3 * S, 5 * S)}
    return sorted({p + d for p in edges for d in (-1, 0, 1)} | {0, 100 * S})


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.integers(1, 4))
def test_evaluate_matches_the_batch_definition(events: list[Event], pieces: int) -> None:
    """In any split into merges, with redelivered ids, at every edge of every window."""
    cut = np.array_split(np.arange(len(events)), pieces)
    state = merged(events, [[events[i] for i in part] for part in cut])
    for at in probes(events):
        got = KERNEL.evaluate(state, at)
        want = reference(events, at, -1)
        assert same(got[0], want[0]) and got[1:] == want[1:], (at, got, want)


@settings(max_examples=100, deadline=None)
@given(EVENTS, st.integers(0, 8))
def test_pruned_state_is_exact_from_horizon_plus_longest_window(events: list[Event], horizon_s: int) -> None:
    horizon = horizon_s * S
    state = merged(events, [events[: len(events) // 2], events[len(events) // 2:]], horizon)
    for at in [p for p in probes(events) if p >= horizon + 5 * S]:
        got = KERNEL.evaluate(state, at)
        want = reference(events, at, horizon)
        assert same(got[0], want[0]) and got[1:] == want[1:], (at, got, want)


def one(event_id: str, second: float, x: float | None = 1.0, n: int | None = 1) -> Event:
    return (event_id, int(second * S), {"x": x, "n": n, "flag": True, "label": "a", "user_id": "u"})


def test_edges_of_one_event() -> None:
    """At e the event counts; at e + w it has left (the window is (t - w, t]); 1 µs before, it is in."""
    state = merged([one("a", 10, x=2.5)])
    sum_2s = KERNEL.feature_names.index("x_sum_2s")
    assert KERNEL.evaluate(state, 10 * S - 1) == ([0.0, 0.0, 0, 0, None, None, None, None, 0, None, None, None, 0], None, 10 * S)
    values, change, until = KERNEL.evaluate(state, 10 * S)
    assert (values[sum_2s], change, until) == (2.5, 10 * S, 12 * S)
    values, change, until = KERNEL.evaluate(state, 12 * S - 1)
    assert (values[sum_2s], change, until) == (2.5, 10 * S, 12 * S)
    values, change, until = KERNEL.evaluate(state, 12 * S)
    assert (values[sum_2s], values[KERNEL.feature_names.index("x_sum_5s")], change, until) == (0.0, 2.5, 12 * S, 13 * S)
    # Emptied: sum and count 0, mean, min and max null; no change ever after.
    values, change, until = KERNEL.evaluate(state, 15 * S)
    assert values == [0.0, 0.0, 0, 0, None, None, None, None, 0, None, None, None, 0]
    assert (change, until) == (15 * S, None)


def test_merging_an_event_twice_changes_nothing() -> None:
    first = merged([one("a", 1, x=0.1), one("b", 1, x=0.2)])
    again = KERNEL.merge(first, event_id_hash(["b", "a", "a"]), np.array([1 * S] * 3),
                         {c: [5.0, 5.0, 5.0] if c == "x" else [1, 1, 1] if c in ("n", "flag") else ["a"] * 3
                          for c in KERNEL.columns}, keep_after_us=-1)
    assert RollingState.generation(again) == RollingState.generation(first) + 1
    assert KERNEL.evaluate(again, 2 * S) == KERNEL.evaluate(first, 2 * S)
    # The batch sums decimals: 0.1 + 0.2 is 0.3, not the float sum 0.30000000000000004.
    assert KERNEL.evaluate(first, 1 * S)[0][0] == 0.3


def test_same_instant_events_count_together_and_nulls_are_skipped() -> None:
    state = merged([one("a", 3, x=1.0), one("b", 3, x=None, n=None), one("c", 3, x=4.0)])
    values = dict(zip(KERNEL.feature_names, KERNEL.evaluate(state, 3 * S)[0]))
    assert values["event_count_3s"] == 3 and values["x_count_5s"] == 2
    assert values["x_mean_2s"] == 2.5 and values["n_sum_5s"] == 2 and values["n_min_2s"] == 1


def test_sums_of_long_decimals_round_as_decimal_38_18() -> None:
    """Values beyond 15 digits take the Python-integer path; 18 places, then 17 for the window."""
    tiny = [one(f"t{i}", 1, x=v) for i, v in enumerate([1.2345678901234567e-05, 0.1, 7.000000000000001e-19, 3.3333333333333335])]
    state = merged(tiny)
    assert KERNEL.evaluate(state, 1 * S)[0][0] == reference(tiny, 1 * S, -1)[0][0]
    # Alone in a window: 2.5e-17 is 0.000...025 at 18 places, 0.000...03 at 17 (half up).
    assert KERNEL.evaluate(merged([one("a", 1, x=2.5e-17), one("b", 5, x=1.2345678901234567e-05)]), 1 * S)[0][0] == 3e-17
    assert KERNEL.evaluate(merged([one("a", 1, x=1.2345678901234567e-05)]), 1 * S)[0][0] == 1.234567890124e-05


def test_min_max_of_text_columns_are_refused() -> None:
    bad = feature_set("bad", features={}, source_=source(columns={"user_id": "string", "label": "string"}),
                      aggregates=[Aggregate("max", "label", windows=["1d"])], source_lookback="1d")
    with pytest.raises(SpecError, match="min/max of string column 'label'"):
        RollingState(bad)


def test_event_id_hash_is_stable() -> None:
    """The same value, the same hash, on any machine and run (not Python's salted hash)."""
    assert event_id_hash(["t-1", 7]).tolist() == event_id_hash(np.array(["t-1", "7"], dtype=object)).tolist()
    assert event_id_hash(["t-1"])[0] == np.uint64(int.from_bytes(__import__("hashlib").blake2b(b"t-1", digest_size=8).digest(), "little"))
