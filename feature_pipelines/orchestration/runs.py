"""Run feature set materializations as Dagster runs recorded in the instance (for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance, Definitions
from dagster._core.errors import DagsterAssetCheckFailedError

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG, online_key
from feature_pipelines.orchestration.code_location import materialize_job_name
from feature_pipelines.orchestration.in_process import execute_recorded_run, record_run
from feature_pipelines.orchestration.run_process import RunProcess
from feature_pipelines.orchestration.writer_slots import SlotWait, claim_writer_slot
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
    defs: Definitions, instance: DagsterInstance, feature_set: FeatureSet, first: str, last: str,
    wait: SlotWait = SlotWait(),
) -> RunOutcome:
    """Materialize windows `first..last` of `feature_set` in one run (one Spark job, one commit),
    once the feature set's writer slot is free (see `run_job`)."""
    windows = windows_between(feature_set, first, last)
    tags = {RANGE_START_TAG: windows[0].key, RANGE_END_TAG: windows[-1].key}
    by_asset, run_id = run_job(defs, instance, materialize_job_name(feature_set), tags=tags, wait=wait)
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
    wait: SlotWait = SlotWait(),
) -> tuple[dict, str]:
    """Execute a job in process, recorded on the instance; return each materialized asset's metadata
    (by asset key, as `a/b`) and the run id. A FeatureStoreError raised inside is re-raised as itself,
    and failed blocking checks as a QualityCheckError, for a clean CLI message.

    The run is recorded first, tagged with this process (so that if the process is killed, the
    next command or the dead-run sensor can fail it and free its slots), then waits for its writer
    slot as `wait` says (RunCanceledError if it gives up), then executes."""
    job = defs.resolve_job_def(job_name)
    recorded = record_run(job, instance, run_config, {**(tags or {}), **RunProcess.current().tags()})
    try:
        claim_writer_slot(instance, recorded.run, recorded.plan, wait)
        events = execute_recorded_run(recorded, instance)
    except FeatureStoreError:
        raise
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
    finally:
        # A step that never ran (a failed run skips its publish) leaves its queued claim, and a
        # run interrupted inside a step keeps its slot: free them now, not when a daemon does.
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(recorded.run.run_id)
    by_asset = {}
    for event in events:
        if event.is_step_materialization:
            materialization = event.materialization
            by_asset[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return by_asset, recorded.run.run_id
