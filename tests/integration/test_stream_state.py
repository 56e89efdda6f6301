"""Streamed rolling aggregates against the batch: the same random events go through Spark's
materialization and the as-of join, and through the rolling state, Redis (`write_stream`) and
`lookup`, at many instants (window edges +- 1 µs among them): equal values, ts and status. Then
the atomic write: newer-wins against batch publishes, and a stale state generation refused."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feature_pipelines import Aggregate
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.planning.windows import windows_between
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.spec.durations import epoch_micros
from feature_pipelines.stores.online.codec import micros_to_datetime
from feature_pipelines.stores.online.lookup import lookup
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.stores.online.stream_state import RollingState, event_id_hash
from tests.factories import feature_set, source
from tests.helpers import write_source

UTC = timezone.utc
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
US = 1
HOUR = 3_600_000_000
COLUMNS = {"user_id": "string", "event_id": "string", "amount": "float64", "score": "float64", "qty": "int64"}
STREAMED = feature_set(
    "streamed", features={}, source_=source(columns=COLUMNS), source_lookback="1d", temporal_join_lookback="2d",
    aggregates=[
        Aggregate("sum", "amount", windows=["1h", "6h", "1d"]),
        Aggregate("count", None, windows=["1h", "1d"]),
        Aggregate("mean", "amount", windows=["6h"]),
        Aggregate("min", "amount", windows=["1d"]),
        Aggregate("max", "amount", windows=["1h"]),
        Aggregate("sum", "score", windows=["6h"]),  # 17-digit and tiny floats: the Python-integer path
        Aggregate("mean", "score", windows=["1d"]),
        Aggregate("max", "score", windows=["1d"]),
        Aggregate("count", "score", windows=["6h"]),
        Aggregate("sum", "qty", windows=["6h"]),
        Aggregate("min", "qty", windows=["1h"]),
    ],
)
ENTITIES = ["u0", "u1", "u2", "u3"]


def random_events(seed: int = 16) -> pd.DataFrame:
    """Events over three days, some sharing an instant, some with null columns."""
    rng = random.Random(seed)
    rows = []
    for entity in ENTITIES:
        times = [DAY0 + timedelta(minutes=rng.randrange(3 * 24 * 60)) for _ in range(30)]
        times += [times[i] for i in range(0, 30, 7)]  # same instant, other events
        times += [DAY0 + timedelta(days=1, hours=rng.randrange(24), microseconds=rng.randrange(10**6)) for _ in range(4)]
        for t in times:
            rows.append({
                "user_id": entity, "event_id": f"{entity}-{len(rows)}", "event_time": t,
                "amount": None if rng.random() < 0.1 else rng.randrange(1, 100_000) / 100,
                "score": None if rng.random() < 0.15 else rng.choice([rng.random(), rng.random() * 1e-6, rng.uniform(-1e3, 1e3)]),
                "qty": None if rng.random() < 0.1 else rng.randrange(-5, 50),
            })
    # Alone in their windows, values whose window totals round at the 17th place (DECIMAL(38,17)).
    for hour, score in ((6, 2.5e-17), (18, 1.2345678901234567e-05)):
        rows.append({"user_id": "u0", "event_id": f"tiny-{hour}", "event_time": DAY0 + timedelta(days=3, hours=hour),
                     "amount": 1.0, "score": score, "qty": 1})
    frame = pd.DataFrame(rows)
    frame["qty"] = frame["qty"].astype("Int64")
    return frame


def instants(events: pd.DataFrame, seed: int = 61) -> list[datetime]:
    """Random instants, every edge of some events' windows +- 1 µs, before everything, and
    one where every value has expired (temporal_join_lookback 2d after the last change)."""
    rng = random.Random(seed)
    picked = {DAY0, DAY0 + timedelta(days=6, hours=12), DAY0 + timedelta(days=3, hours=6), DAY0 + timedelta(days=3, hours=18)}
    picked |= {DAY0 + timedelta(microseconds=rng.randrange(4 * 86_400 * 10**6)) for _ in range(25)}
    for t in rng.sample(list(events["event_time"]), 12):
        for w in (timedelta(0), timedelta(hours=1), timedelta(hours=6), timedelta(days=1)):
            picked |= {t.to_pydatetime() + w + timedelta(microseconds=d) for d in (-1, 0, 1)}
    return sorted(picked)


def plain(value: Any, dtype: str) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return float(value) if dtype == "float64" else int(value)


def streamed_row(store: RedisOnlineStore, kernel: RollingState, entity: str, events: pd.DataFrame, at: datetime,
                 written_at: datetime) -> None:
    """The processor's work for one entity that saw the events up to `at`: two micro-batches (the
    second delivering some of the first again), each merged into the state and written with the
    row evaluated at `written_at`, or at the newest event if later (a processor runs after the
    events it applies)."""
    mine = events[events["event_time"] <= at]  # the entity's events, in time order
    if len(mine):
        written_at = max(written_at, mine["event_time"].max().to_pydatetime())
    half = len(mine) // 2
    state = None
    for batch in (mine.iloc[:half], pd.concat([mine.iloc[half:], mine.iloc[: half // 2]])):
        state = kernel.merge(state, event_id_hash(batch["event_id"].to_numpy()),
                             np.array([epoch_micros(t) for t in batch["event_time"]], dtype=np.int64),
                             {c: [None if pd.isna(v) else v for v in batch[c]] for c in kernel.columns}, keep_after_us=-1)
        values, change, until = kernel.evaluate(state, epoch_micros(written_at))
        row = None if change is None else store.codec(STREAMED).encode_micros(
            change, dict(zip(kernel.feature_names, values)), until)
        result = store.write_stream(STREAMED, [(entity,)], [state], [row])
        assert result.refused == ()


def test_streamed_values_equal_the_batch_as_of_join(spark, stores: Stores, tmp_path: Path) -> None:
    events = random_events()
    write_source(stores.source_root, "events", events)
    keys = [w.key for w in windows_between(STREAMED, "2024-01-01", "2024-01-07")]
    materialize_windows(spark, STREAMED, keys, stores)
    moments = instants(events)
    observations = pd.DataFrame([(e, pd.Timestamp(t)) for e in ENTITIES for t in moments],
                                columns=["user_id", "event_timestamp"])
    api = FeatureStore(Catalog([CatalogEntry(STREAMED, Path("test"))]), stores.offline, stores.online,
                       source_root=stores.source_root)
    joined = api.get_offline_features(observations, ["streamed:1:*"], engine="local", now=DAY0 + timedelta(days=8))
    offline = stores.offline.open(STREAMED).read().to_pandas()
    by_entity = {e: events[events["user_id"] == e].sort_values("event_time") for e in ENTITIES}
    offline_of = {e: offline[offline["user_id"] == e] for e in ENTITIES}
    dtypes = {f.name: f.dtype for f in STREAMED.features}
    selections = api.resolve(["streamed:1:*"])
    kernel = stores.online.rolling_state(STREAMED)
    client = stores.online.client
    rng = random.Random(7)
    checked = {"present": 0, "expired": 0, "not_found": 0, "evaluated again": 0}
    for i, (entity, at) in enumerate(zip(observations["user_id"], observations["event_timestamp"])):
        at = at.to_pydatetime()
        client.delete(stores.online.key(STREAMED, [entity]), stores.online.state_key(STREAMED, [entity]))
        # Written at `at` or before: rows still valid at `at` are read as stored, the others evaluated again.
        written_at = at - rng.choice([timedelta(0), timedelta(microseconds=1), timedelta(hours=2), timedelta(days=1)])
        streamed_row(stores.online, kernel, entity, by_entity[entity], at, written_at)
        stored_until = stores.online.read_many([(STREAMED, [(entity,)])])[0].valid_until_micros[0]
        [found] = lookup(stores.online, selections, {"user_id": [entity]}, at)
        # The batch: the as-of join's values, and the offline row it picked (ts, or expired).
        rows = offline_of[entity][offline_of[entity]["ts"] <= pd.Timestamp(at)]
        want_ts = rows["ts"].max() if len(rows) else None
        want_status = ("not_found" if want_ts is None else
                       "expired" if pd.Timestamp(at) - want_ts > timedelta(days=2) else "present")
        assert found.statuses() == [want_status], (entity, at)
        assert found.ts_micros[0] == (-1 if want_ts is None else epoch_micros(want_ts.to_pydatetime())), (entity, at)
        for feature, column in zip(selections[0].features, selections[0].columns):
            want = plain(joined[column].iloc[i], dtypes[feature])
            got = found.columns[column][0]
            assert (type(got), got) == (type(want), want), (entity, at, feature)
        checked[want_status] += 1
        checked["evaluated again"] += int(0 <= stored_until <= epoch_micros(at))
    assert min(checked.values()) > 0, checked  # every case came up


SMALL = feature_set("small", features={}, source_=source(columns={"user_id": "string", "x": "float64"}),
                    source_lookback="1h", aggregates=[Aggregate("sum", "x", windows=["1h"])])


def state_of(kernel: RollingState, state: bytes | None, event: str, at_us: int, x: float) -> bytes:
    return kernel.merge(state, event_id_hash([event]), np.array([at_us]), {"x": [x]}, keep_after_us=-1)


def check_newer_wins_and_generations(store: RedisOnlineStore, entities: list[str]) -> None:
    """For each entity: a streamed row, then batch publishes of an older, an equal and a newer
    row, reading the values at instants around them; then a stale generation is refused."""
    kernel, codec = store.rolling_state(SMALL), store.codec(SMALL)
    t = epoch_micros(DAY0)
    states = [state_of(kernel, None, f"{e}-1", t, 2.5) for e in entities]
    rows = []
    for state in states:
        values, change, until = kernel.evaluate(state, t + 10)
        assert (values, change, until) == ([2.5], t, t + HOUR)
        rows.append(codec.encode_micros(change, {"x_sum_1h": values[0]}, until))
    assert store.write_stream(SMALL, [(e,) for e in entities], states, rows).written == len(entities)
    selections = [_selection(SMALL)]

    def read(at_us: int) -> tuple[list, list]:
        [found] = lookup(store, selections, {"user_id": entities}, micros_to_datetime(at_us))
        return found.columns["x_sum_1h"], found.ts_micros.tolist()

    def publish(ts_us: int, x: float) -> int:
        batch = pa.RecordBatch.from_pylist([{"user_id": e, "ts": micros_to_datetime(ts_us), "x_sum_1h": x} for e in entities])
        return store.publish(SMALL, [batch]).written

    n = len(entities)
    assert read(t + 5) == ([2.5] * n, [t] * n)
    assert read(t + HOUR) == ([0.0] * n, [t + HOUR] * n)  # valid_until passed: evaluated from the state
    assert publish(t - 1, 9.0) == 0  # an older window never regresses the streamed value
    assert read(t + 5) == ([2.5] * n, [t] * n)
    assert publish(t, 7.0) == n  # a re-materialized window corrects it ...
    assert read(t + 5) == ([7.0] * n, [t] * n)
    assert read(t + HOUR) == ([0.0] * n, [t + HOUR] * n)  # ... and its streamed valid_until still holds
    assert publish(t + 2 * HOUR, 4.0) == n  # newer than valid_until: read as the state says from its ts on
    assert read(t + 2 * HOUR - 1) == ([4.0] * n, [t + 2 * HOUR] * n)
    assert read(t + 2 * HOUR) == ([0.0] * n, [t + HOUR] * n)
    # A processor that read the state before another one wrote (every other entity here): its
    # write is refused and changes nothing; the others' writes go through.
    later = [state_of(kernel, s, "second", t + 20, 1.0) for s in states]
    assert store.write_stream(SMALL, [(e,) for e in entities], later, [None] * n).kept_newer == n
    rival = [state_of(kernel, s if i % 2 else z, "rival", t + 30, 100.0) for i, (s, z) in enumerate(zip(states, later))]
    values, change, until = kernel.evaluate(rival[0], t + 31)
    assert (values, change, until) == ([103.5], t + 30, t + HOUR)
    row = codec.encode_micros(change, {"x_sum_1h": values[0]}, until)
    result = store.write_stream(SMALL, [(e,) for e in entities], rival, [row] * n)
    # Written states, but the values published at t + 2h are newer than t + 30.
    assert result.refused == tuple(range(1, n, 2)) and (result.written, result.kept_newer) == (0, len(range(0, n, 2)))
    assert store.read_states(SMALL, [(e,) for e in entities]) == [r if i % 2 == 0 else z for i, (r, z) in enumerate(zip(rival, later))]
    assert read(t + 2 * HOUR) == ([0.0] * n, [t + HOUR + (30 if i % 2 == 0 else 20) for i in range(n)])


def _selection(fs):
    api = FeatureStore(Catalog([CatalogEntry(fs, Path("test"))]), None)  # resolving needs no stores
    return api.resolve([f"{fs.name}:1:*"])[0]


@pytest.mark.parametrize("count", [3])
def test_stream_writes_keep_newer_wins_and_refuse_stale_generations(online_store: RedisOnlineStore, count: int) -> None:
    check_newer_wins_and_generations(online_store, [f"u{i}" for i in range(count)])


def test_stream_writes_of_copied_features_keep_no_state(online_store: RedisOnlineStore) -> None:
    """A passthrough set streams rows only: no state, no generation, newer-wins as for publishes."""
    plain = feature_set("plain")
    codec, t = online_store.codec(plain), epoch_micros(DAY0)
    rows = [codec.encode_micros(t + i, {"x": float(i)}) for i in range(3)]
    first = online_store.write_stream(plain, [("a",), ("b",), ("a",)], [None] * 3, rows)
    assert (first.written, first.kept_newer, first.refused) == (3, 0, ())
    again = online_store.write_stream(plain, [("a",), ("b",)], [None, None], [rows[2], rows[0]])
    assert (again.written, again.kept_newer, again.refused) == (1, 1, ())  # equal ts replaces, older is kept out
    assert [v.features["x"] for v in online_store.read(plain, [["a"], ["b"]])] == [2.0, 1.0]
    assert online_store.write_stream(plain, [("b",)], [None], [codec.encode_micros(t - 1, {"x": 9.0})]).kept_newer == 1
    assert online_store.read_states(plain, [("a",), ("b",)]) == [None, None]
