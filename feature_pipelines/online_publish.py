"""Publish windows to the online store from the offline store.

Online publishing is its own step (and its own Dagster asset, downstream of the offline one),
so a window that fails a blocking quality check never reaches Redis, and a window that is
offline but not online (a crash between the two, Redis down) is repaired by publishing again.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from feature_pipelines.delta_files import read_delta
from feature_pipelines.offline_store import DeltaOfflineStore
from feature_pipelines.online_store import PublishResult, RedisOnlineStore
from feature_pipelines.spec import WINDOW_KEY_COLUMN, FeatureSet

_BATCH_ROWS = 50_000


def publish_windows(
    feature_set: FeatureSet, window_keys: list[str], offline: DeltaOfflineStore, online: RedisOnlineStore
) -> PublishResult:
    """Write each entity's newest row among `window_keys` to Redis, unless Redis holds a newer one."""
    if not offline.exists(feature_set):
        return PublishResult(rows=0, written=0)
    columns = [*feature_set.entity_names, feature_set.timestamp, *feature_set.feature_names]
    rows = read_delta(offline.table(feature_set), columns=columns, filter=pc.field(WINDOW_KEY_COLUMN).isin(window_keys))
    return online.publish(feature_set, latest_per_entity(feature_set, rows).to_batches(max_chunksize=_BATCH_ROWS))


def latest_per_entity(feature_set: FeatureSet, rows: pa.Table) -> pa.Table:
    """The row with the greatest timestamp of each entity ((keys, ts) is unique in the store)."""
    keys, ts = feature_set.entity_names, feature_set.timestamp
    if rows.num_rows == 0:
        return rows
    newest = rows.group_by(keys).aggregate([(ts, "max")]).rename_columns([*keys, ts])
    return rows.join(newest, keys=[*keys, ts], join_type="inner").select(rows.column_names)
