"""Run feature set materializations as Dagster runs recorded in the instance (for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance, Definitions
from dagster._core.errors import DagsterAssetCheckFailedError

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG, online_key
from feature_pipelines.orchestration.code_location import materialize_job_name
from feature_pipelines.errors import FeatureStoreError, QualityCheckError
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.planning.windows import windows_between



@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    windows: int
    metadata: dict  # the offline asset's materialization metadata
    online: dict  # the online asset's, when the set is served online


def materialize_range(
    defs: Definitions, instance: DagsterInstance, feature_set: FeatureSet, first: str, last: str
) -> RunOutcome:
    """Materialize windows `first..last` of `feature_set` in one run (one Spark job, one commit)."""
    windows = windows_between(feature_set, first, last)
    tags = {RANGE_START_TAG: windows[0].key, RANGE_END_TAG: windows[-1].key}
    by_asset, run_id = run_job(defs, instance, materialize_job_name(feature_set), tags=tags)
    return RunOutcome(run_id=run_id, windows=len(windows), metadata=by_asset.get(feature_set.key, {}),
                      online=by_asset.get(online_key(feature_set).to_user_string(), {}))


def _feature_store_cause(exc: BaseException) -> FeatureStoreError | None:
    """Dagster wraps errors raised in an asset; find ours so the CLI can print its message."""
    current: BaseException | None = exc
    visited: set[int] = set()
    while current is not None and id(current) not in visited:  # chains can loop
        if isinstance(current, FeatureStoreError):
            return current
        visited.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def run_job(
    defs: Definitions,
    instance: DagsterInstance,
    job_name: str,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[dict, str]:
    """Execute a job in process, recorded on the instance; return each materialized asset's metadata
    (by asset key, as `a/b`) and the run id. A FeatureStoreError raised inside is re-raised as itself,
    and failed blocking checks as a QualityCheckError, for a clean CLI message."""
    job = defs.resolve_job_def(job_name)
    try:
        result = job.execute_in_process(instance=instance, run_config=run_config, tags=tags)
    except DagsterAssetCheckFailedError as exc:
        raise QualityCheckError(
            f"{exc}. The windows are in the offline store (inspect them and the check results in the Dagster UI) "
            "but were not published online; fix the data and re-run them."
        ) from exc
    except Exception as exc:
        cause = _feature_store_cause(exc)
        if cause is not None:
            raise cause from exc
        raise
    by_asset = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        by_asset[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return by_asset, result.run_id
