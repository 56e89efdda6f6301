"""Backfills as real Dagster asset backfills: submit the windows, follow to the end (which
windows, see `planning.window_selection`).

The backfill is written to the instance directly (as the webserver's "Launch backfill" does), so
it appears under Backfills in the UI, the daemon runs it, and the asset's single-run backfill
policy turns each contiguous range of windows into one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from dagster import AssetKey, DagsterInstance, Definitions
from dagster._core.execution.asset_backfill import AssetBackfillStatus
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from feature_pipelines.orchestration.code_location import materialized_assets
from feature_pipelines.errors import WindowError
from feature_pipelines.spec.feature_set import FeatureSet

# A daemon that has not reported for this long is taken as not running.
_DAEMON_HEARTBEAT_MAX_AGE = timedelta(minutes=2)


@dataclass(frozen=True)
class BackfillProgress:
    backfill_id: str
    status: str
    targeted: int
    materialized: int
    failed: int
    in_progress: int

    @property
    def done(self) -> bool:
        return BulkActionStatus(self.status) in BULK_ACTION_TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == BulkActionStatus.COMPLETED_SUCCESS.value and self.failed == 0

    def describe(self) -> str:
        return (f"backfill {self.backfill_id}: {self.materialized}/{self.targeted} window(s) materialized, "
                f"{self.failed} failed, {self.in_progress} in progress [{self.status}]")


def submit_backfill(
    instance: DagsterInstance, defs: Definitions, feature_set: FeatureSet, keys: list[str], title: str | None = None
) -> str:
    """Add an asset backfill of `keys` to the instance; the daemon runs it. Returns its id."""
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id,
        asset_graph=defs.resolve_asset_graph(),
        partition_names=keys,
        asset_selection=materialized_assets(feature_set),
        backfill_timestamp=time.time(),
        tags={"feature_set": feature_set.name, "version": str(feature_set.version)},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title or f"{feature_set.key} {keys[0]}..{keys[-1]}",
        description=f"{len(keys)} window(s) of {feature_set.key}, submitted by the featurestore CLI",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill_id


def backfill_progress(
    instance: DagsterInstance, defs: Definitions, backfill_id: str, feature_set: FeatureSet
) -> BackfillProgress:
    """Progress in windows: the feature set's offline asset (its online publish follows it)."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        raise WindowError(f"no backfill {backfill_id!r} on this Dagster instance (DAGSTER_HOME).")
    counts: dict[AssetBackfillStatus, int] = {}
    targeted = 0
    data = backfill.asset_backfill_data
    if data is not None:
        for status in data.get_backfill_status_per_asset_key(defs.resolve_asset_graph()):
            if status.asset_key != AssetKey([feature_set.key]):
                continue
            targeted += getattr(status, "num_targeted_partitions", 0)
            for kind, count in getattr(status, "partitions_counts_by_status", {}).items():
                counts[kind] = counts.get(kind, 0) + count
    return BackfillProgress(
        backfill_id=backfill_id,
        status=backfill.status.value,
        targeted=targeted,
        materialized=counts.get(AssetBackfillStatus.MATERIALIZED, 0),
        failed=counts.get(AssetBackfillStatus.FAILED, 0),
        in_progress=counts.get(AssetBackfillStatus.IN_PROGRESS, 0),
    )


def daemon_running(instance: DagsterInstance) -> bool:
    """Whether a dagster-daemon has reported to this instance recently."""
    heartbeats = instance.get_daemon_heartbeats()
    newest = max((h.timestamp for h in heartbeats.values()), default=None)
    return newest is not None and time.time() - newest < _DAEMON_HEARTBEAT_MAX_AGE.total_seconds()


def wait_for_backfill(
    instance: DagsterInstance,
    defs: Definitions,
    backfill_id: str,
    feature_set: FeatureSet,
    report: Callable[[BackfillProgress], None],
    poll_s: float = 2.0,
    timeout_s: float | None = None,
) -> BackfillProgress:
    """Poll until the backfill ends, reporting each change of progress."""
    started = time.monotonic()
    last = None
    while True:
        progress = backfill_progress(instance, defs, backfill_id, feature_set)
        if progress != last:
            report(progress)
            last = progress
        if progress.done:
            return progress
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise WindowError(f"backfill {backfill_id} did not finish within {timeout_s:.0f}s; it keeps running in the daemon.")
        time.sleep(poll_s)

