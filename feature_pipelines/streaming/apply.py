"""Apply a micro-batch of validated events to one streamed feature set's online values.

Aggregate sets: per entity, the rolling state is read, the events merged into it (a union by
event id, so events applied again change nothing), evaluated at now, and the state and row written
in one atomic step that is refused when another processor wrote the entity's state meanwhile; those
entities are read and merged again. Sets of copied columns: the row of each event, by the same
newer-wins rule as batch publishing.

An entity without a rolling state (its first streamed event, or Redis lost the states) starts from
its recent events in the source's Delta table (`history`), which batch counts too: so its first
streamed value agrees with batch, and a lost state is rebuilt where its entity is next streamed.

Events older than `now - allowed_lateness` are not applied online (they reach the Delta source
only, and so the next window runs); they are counted as late.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.faults import STREAM_BEFORE_STATE_WRITE, fault_point
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.stores.offline.source_history import entity_values
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.stores.online.stream_state import event_id_hash

MAX_ATTEMPTS = 20  # rounds of re-reading entities whose state another processor moved on

# The source's events of some entities after an instant (`stores/offline/source_history.py`):
# (entities, after_us, columns) -> a table of keys, columns, event id and int64 event time, or None.
History = Callable[[Sequence[tuple], int, Sequence[str]], "pa.Table | None"]


@dataclass(frozen=True)
class Applied:
    """What one micro-batch did to one feature set."""

    applied: int  # events written online (merged into states, or rows offered by newer-wins)
    late: int  # events older than the allowed lateness: Delta only
    retried: int  # entity writes refused by the generation check and done again


def apply_events(store: RedisOnlineStore, feature_set: FeatureSet, events: Sequence[dict[str, Any]],
                 times_us: Sequence[int], now_us: int, lateness_us: int, history: History | None = None) -> Applied:
    """Apply `events` (validated, with their event times in microseconds) to `feature_set` online;
    `history` gives the source's past events of entities that have no state yet."""
    on_time = [i for i, t in enumerate(times_us) if t >= now_us - lateness_us]
    late = len(events) - len(on_time)
    if not on_time:
        return Applied(0, late, 0)
    events = [events[i] for i in on_time]
    times = np.array([times_us[i] for i in on_time], dtype=np.int64)
    if feature_set.aggregates:
        retried = _apply_aggregates(store, feature_set, events, times, now_us, lateness_us, history)
    else:
        retried = _apply_copied(store, feature_set, events, times)
    return Applied(len(events), late, retried)


def _apply_aggregates(store: RedisOnlineStore, feature_set: FeatureSet, events: Sequence[dict[str, Any]],
                      times: np.ndarray, now_us: int, lateness_us: int, history: History | None) -> int:
    kernel, codec = store.rolling_state(feature_set), store.codec(feature_set)
    source = feature_set.source
    ids = event_id_hash([event[source.event_id] for event in events])
    rows_of: dict[tuple, list[int]] = {}
    for row, event in enumerate(events):
        rows_of.setdefault(tuple(event[k] for k in feature_set.entity_names), []).append(row)
    columns = {name: [event[name] for event in events] for name in kernel.columns}
    # The state keeps what evaluations from now on need, and late events still accepted.
    keep_after = now_us - kernel.longest_us - lateness_us
    waiting = list(rows_of)
    retried = 0
    for _ in range(MAX_ATTEMPTS):
        stored = store.read_states(feature_set, waiting)
        seeds = _seeds(feature_set, [e for e, state in zip(waiting, stored) if state is None], keep_after,
                       kernel.columns, history)
        states, values = [], []
        for entity, state in zip(waiting, stored):
            rows = rows_of[entity]
            event_ids, event_times = ids[rows], times[rows]
            values_of = {n: [c[r] for r in rows] for n, c in columns.items()}
            if entity in seeds:  # the source's history first: merging keeps the first of each id
                seed_ids, seed_times, seed_values = seeds[entity]
                event_ids, event_times = np.concatenate([seed_ids, event_ids]), np.concatenate([seed_times, event_times])
                values_of = {n: seed_values[n] + v for n, v in values_of.items()}
            merged = kernel.merge(state, event_ids, event_times, values_of, keep_after_us=keep_after)
            result, change_us, until_us = kernel.evaluate(merged, now_us)
            states.append(merged)
            if change_us is not None:
                values.append(codec.encode_micros(change_us, dict(zip(kernel.feature_names, result)), until_us))
            else:  # every event is later than now (a producer's clock runs ahead): nulls until the first,
                # then lookups evaluate the state (without a row, none would ever read it)
                values.append(None if until_us is None else codec.encode_micros(0, {}, until_us))
        fault_point(STREAM_BEFORE_STATE_WRITE)
        written = store.write_stream(feature_set, waiting, states, values)
        if not written.refused:
            return retried
        retried += len(written.refused)
        waiting = [waiting[i] for i in written.refused]
    raise OnlineStoreError(f"feature set {feature_set.key}: the rolling state of {len(waiting)} entities kept changing "
                           f"under this processor ({MAX_ATTEMPTS} attempts), e.g. {waiting[0]!r}; the micro-batch is "
                           "not acknowledged and will be applied again.")


def _seeds(feature_set: FeatureSet, entities: list[tuple], after_us: int, columns: Sequence[str],
           history: History | None) -> dict[tuple, tuple[np.ndarray, np.ndarray, dict[str, list]]]:
    """Per entity without a state: the event id hashes, times and column values of its events in
    the source after `after_us`."""
    if not entities or history is None:
        return {}
    table = history(entities, after_us, columns)
    if table is None or not table.num_rows:
        return {}
    keys, source = feature_set.entity_names, feature_set.source
    ids = event_id_hash(table.column(source.event_id).to_pylist())
    times = table.column(source.timestamp).to_numpy()
    values = {name: table.column(name).to_pylist() for name in columns}
    rows: dict[tuple, list[int]] = {}
    for row, entity in enumerate(entity_values(table, keys)):
        rows.setdefault(entity, []).append(row)
    return {entity: (ids[r], times[r], {n: [v[i] for i in r] for n, v in values.items()}) for entity, r in rows.items()}


def _apply_copied(store: RedisOnlineStore, feature_set: FeatureSet, events: Sequence[dict[str, Any]],
                  times: np.ndarray) -> int:
    """One row per event: keys, ts (its event time) and the copied columns."""
    dtypes = {f.name: f.dtype for f in feature_set.features}
    dtypes.update({e.name: e.dtype for e in feature_set.entities})
    columns = {name: pa.array([event[name] for event in events], _json_type(dtype)) for name, dtype in dtypes.items()}
    columns[feature_set.timestamp] = pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    store.publish(feature_set, [pa.table(columns).to_batches()[0]])
    return 0


def _json_type(dtype: str) -> pa.DataType | None:
    """The Arrow type of a copied column as the log holds it (times and dates as ISO text: the
    codec stores them as text too); None lets Arrow infer."""
    return {"string": pa.string(), "int64": pa.int64(), "int32": pa.int64(), "float64": pa.float64(),
            "float32": pa.float64(), "bool": pa.bool_()}.get(dtype)
