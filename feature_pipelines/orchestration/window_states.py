"""What the Dagster instance knows about each window: the state of its latest run."""

from __future__ import annotations

from dagster import AssetKey, AssetPartitionStatus, DagsterInstance

from feature_pipelines.orchestration.partitions import partitions_def
from feature_pipelines.planning.window_status import FAILED, IN_PROGRESS
from feature_pipelines.planning.windows import Window
from feature_pipelines.spec.feature_set import FeatureSet

_STATES = {AssetPartitionStatus.IN_PROGRESS: IN_PROGRESS, AssetPartitionStatus.FAILED: FAILED}


def window_run_states(instance: DagsterInstance, feature_set: FeatureSet, windows: list[Window]) -> dict[str, str]:
    """Window key -> `IN_PROGRESS` or `FAILED` for the windows whose latest run is running or
    failed, as the window status and backfill selection rules take them."""
    if not windows:
        return {}
    by_key = instance.get_status_by_partition(
        AssetKey([feature_set.key]), [w.key for w in windows], partitions_def(feature_set)
    ) or {}
    return {key: _STATES[state] for key, state in by_key.items() if state in _STATES}
