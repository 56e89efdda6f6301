"""What the Dagster instance knows about each window: the state of its latest run; and the
window status of a feature set, from the instance and the stores together."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from dagster import AssetKey, DagsterInstance
from dagster._core.storage.partition_status_cache import AssetStatusCacheValue, get_and_update_asset_status_cache_value

from feature_pipelines.orchestration.partitions import partitions_def
from feature_pipelines.planning.window_status import (
    FAILED, IN_PROGRESS, WindowStatus, staleness_files, status_windows, window_statuses,
)
from feature_pipelines.planning.windows import Window
from feature_pipelines.spec.feature_set import FeatureSet

if TYPE_CHECKING:
    from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore


def window_run_states(instance: DagsterInstance, feature_set: FeatureSet, windows: list[Window]) -> dict[str, str]:
    """Window key -> `IN_PROGRESS` or `FAILED` for the windows whose latest run is running or
    failed, as the window status and backfill selection rules take them."""
    if not windows:
        return {}
    definition = partitions_def(feature_set)
    # The instance's partition status cache, read as the few failed and in-progress keys it holds:
    # `get_status_by_partition` tests every window against it instead (0.1 s per 1000 windows).
    cached = get_and_update_asset_status_cache_value(instance, AssetKey([feature_set.key]), definition)
    if not isinstance(cached, AssetStatusCacheValue):
        return {}
    wanted = {w.key for w in windows}
    states = {k: FAILED for k in cached.deserialize_failed_partition_subsets(definition).get_partition_keys()
              if k in wanted}
    states.update({k: IN_PROGRESS for k in cached.deserialize_in_progress_partition_subsets(definition)
                   .get_partition_keys() if k in wanted})  # a running retry outranks the failure before it
    return states


def feature_set_statuses(instance: DagsterInstance, feature_set: FeatureSet, offline: DeltaOfflineStore,
                         source_root: str, source_options: dict[str, str] | None, now: datetime,
                         first: str | None = None, last: str | None = None) -> list[WindowStatus]:
    """The status of windows `first..last` (default: every complete window at `now`), from the
    window log, the source's Delta log and the runs on the instance: what `featurestore status`
    and `describe` show."""
    windows = status_windows(feature_set, now, first, last)
    return window_statuses(feature_set, windows, offline.materialized_windows(feature_set),
                           staleness_files(feature_set, source_root, source_options),
                           window_run_states(instance, feature_set, windows))
