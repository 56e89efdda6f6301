"""Run feature set materializations as Dagster runs recorded in the instance (for the CLI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterEvent, DagsterEventType, DagsterInstance, Definitions
from dagster._core.errors import DagsterAssetCheckFailedError

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG, online_key
from feature_pipelines.orchestration.code_location import materialize_job_name
from feature_pipelines.orchestration.in_process import execute_recorded_run, record_run
from feature_pipelines.orchestration.run_process import RunProcess
from feature_pipelines.orchestration.writer_slots import SlotWait, claim_writer_slot
from feature_pipelines.errors import FeatureStoreError, QualityCheckError, user_error
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.planning.windows import windows_between

# Dagster's console logger prints every event of a run on stderr (hundreds of DEBUG lines for one
# materialization, and each failure's stack trace twice). Quiet runs set it to CRITICAL, which
# nothing logs at: the console shows only what the CLI prints, while the instance's event log,
# and so the UI, still keeps every event and log line of the run.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class RunProgress:
    """How far a materialization run has come, updated from its events as they happen."""

    feature_set: str
    windows: int
    windows_done: int = 0  # windows whose offline materialization is recorded
    rows: int | None = None  # rows written, once the offline step has committed
    step: str = "starting"  # starting, computing, publishing online, done
    failed_checks: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def update(self, event: DagsterEvent, offline: AssetKey, online: AssetKey) -> bool:
        """Take in one event of the run; True when it changed something worth showing."""
        if event.event_type == DagsterEventType.STEP_START:
            self.step = "publishing online" if event.step_key == online.to_python_identifier() else "computing"
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION and event.asset_key == offline:
            # One materialization per window, all recorded once the run's single commit is done.
            self.windows_done += 1
            rows = event.materialization.metadata.get("dagster/row_count")
            self.rows = int(rows.value) if rows is not None else self.rows
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                self.failed_checks.append(evaluation.check_name)
        elif event.event_type == DagsterEventType.RUN_SUCCESS:
            self.step = "done"
        else:
            return False
        return True


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    windows: int
    metadata: dict  # the offline asset's materialization metadata
    online: dict  # the online asset's, when the set is served online


def materialize_range(
    defs: Definitions, instance: DagsterInstance, feature_set: FeatureSet, first: str, last: str,
    wait: SlotWait = SlotWait(), quiet: bool = False, progress: Callable[[RunProgress], None] | None = None,
) -> RunOutcome:
    """Materialize windows `first..last` of `feature_set` in one run (one Spark job, one commit),
    once the feature set's writer slot is free (see `run_job`). `progress` is called whenever the
    run moves on (a step starts, windows are recorded, a check fails, it succeeds)."""
    windows = windows_between(feature_set, first, last)
    tags = {RANGE_START_TAG: windows[0].key, RANGE_END_TAG: windows[-1].key}
    state = RunProgress(feature_set.key, len(windows))
    offline, online = AssetKey([feature_set.key]), online_key(feature_set)

    def on_event(event: DagsterEvent) -> None:
        if state.update(event, offline, online) and progress is not None:
            progress(state)

    by_asset, run_id = run_job(defs, instance, materialize_job_name(feature_set), tags=tags, wait=wait, quiet=quiet,
                               on_event=on_event)
    return RunOutcome(run_id=run_id, windows=len(windows), metadata=by_asset.get(feature_set.key, {}),
                      online=by_asset.get(online_key(feature_set).to_user_string(), {}))


def run_job(
    defs: Definitions,
    instance: DagsterInstance,
    job_name: str,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    wait: SlotWait = SlotWait(),
    quiet: bool = False,
    on_event: Callable[[DagsterEvent], None] | None = None,
) -> tuple[dict, str]:
    """Execute a job in process, recorded on the instance; return each materialized asset's metadata
    (by asset key, as `a/b`) and the run id. A FeatureStoreError raised inside is re-raised as itself,
    and failed blocking checks as a QualityCheckError, for a clean CLI message. `quiet` keeps
    Dagster's log lines off the console (see QUIET_CONSOLE); `on_event` sees each event as it happens.

    The run is recorded first, tagged with this process (so that if the process is killed, the
    next command or the dead-run sensor can fail it and free its slots), then waits for its writer
    slot as `wait` says (RunCanceledError if it gives up), then executes."""
    job = defs.resolve_job_def(job_name)
    if quiet:
        run_config = {**(run_config or {}), **QUIET_CONSOLE}
    recorded = record_run(job, instance, run_config, {**(tags or {}), **RunProcess.current().tags()})
    try:
        claim_writer_slot(instance, recorded.run, recorded.plan, wait)
        events = execute_recorded_run(recorded, instance, on_event)
    except FeatureStoreError:
        raise
    except DagsterAssetCheckFailedError as exc:
        raise QualityCheckError(
            f"{str(exc).rstrip('.')}. The windows it failed on are quarantined: in the offline store (inspect them and the check "
            "results in the Dagster UI, or with `featurestore status`) but not published online, and refused by "
            "retrieval unless accepted; fix the data and re-run them."
        ) from exc
    except Exception as exc:
        cause = user_error(exc)
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
