"""Publish windows to the online store from the offline store.

Online publishing is its own step (and its own Dagster asset, downstream of the offline one),
so a window that fails a blocking quality check never reaches Redis, and a window that is
offline but not online (a crash between the two, Redis down) is repaired by publishing again.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import PublishResult, RedisOnlineStore
from feature_pipelines.spec.feature_set import FeatureSet

_BATCH_ROWS = 50_000


def publish_windows(
    feature_set: FeatureSet, window_keys: list[str], offline: DeltaOfflineStore, online: RedisOnlineStore,
    repair: bool = True,
) -> PublishResult:
    """Write each entity's newest row among `window_keys` to Redis, unless Redis holds a newer one.

    With `repair`, windows that passed their checks offline but were never published (a crash
    between the two steps, Redis down or emptied) are published too; `PublishResult.repaired`
    names them. Publishing is idempotent: the newer-wins rule makes repeats harmless."""
    table = offline.open(feature_set)
    if not table.exists:
        return PublishResult(rows=0, written=0)
    repaired: list[str] = []
    if repair:
        done = online.published_windows(feature_set)
        repaired = [k for k in offline.publishable_windows(feature_set) if k not in done and k not in window_keys]
    keys = sorted({*window_keys, *repaired})
    columns = [*feature_set.entity_names, feature_set.timestamp, *feature_set.feature_names]
    rows = table.read(keys, columns=columns)
    result = online.publish(feature_set, latest_per_entity(feature_set, rows).to_batches(max_chunksize=_BATCH_ROWS))
    online.mark_published(feature_set, keys)
    return replace(result, repaired=tuple(repaired))


def latest_per_entity(feature_set: FeatureSet, rows: pa.Table) -> pa.Table:
    """The row with the greatest timestamp of each entity ((keys, ts) is unique in the store)."""
    keys, ts = feature_set.entity_names, feature_set.timestamp
    if rows.num_rows == 0:
        return rows
    newest = rows.group_by(keys).aggregate([(ts, "max")]).rename_columns([*keys, ts])
    return rows.join(newest, keys=[*keys, ts], join_type="inner").select(rows.column_names)
