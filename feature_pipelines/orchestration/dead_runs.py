"""Runs whose process is gone: marked failed, and their writer slots freed.

Dagster's run monitoring watches run workers. A run executed in process (the `featurestore` CLI)
has none, so when its process is killed (SIGKILL, out of memory, a reboot) the run stays STARTED
for good and keeps its feature set's concurrency slot: every later run of that feature set waits.
The CLI tags its runs with their process (run_process.py); `reap_dead_runs` fails those whose
process is gone and frees their slots. Every CLI command that opens the instance calls it, a run
waiting for a slot calls it on the holder, and the `feature_store_dead_runs` sensor calls it every
30 s while a daemon runs. Only processes of the caller's machine (and container) can be checked:
runs started on another machine are reaped by a command or a daemon there.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from feature_pipelines.orchestration.run_process import HOST_TAG, Liveness, RunProcess

DEAD_RUN_SENSOR = "feature_store_dead_runs"
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
              DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    job_name: str
    process: RunProcess
    failed: bool  # False: it had ended, only its slots were still held

    def describe(self) -> str:
        gone = f"its {self.process.describe(Liveness.GONE)}"
        if self.failed:
            return (f"run {self.run_id} ({self.job_name}) was killed ({gone}): marked it failed "
                    "and freed its writer slots.")
        return f"freed the writer slots still held by run {self.run_id} ({self.job_name}), which has ended ({gone})."


def reap_dead_runs(instance: DagsterInstance) -> list[ReapedRun]:
    """Fail the unfinished runs of this machine whose process is gone, and free every slot held
    or queued for by such a run; return what was done."""
    tags = {HOST_TAG: socket.gethostname()}
    runs = [r.dagster_run for r in instance.get_run_records(RunsFilter(statuses=UNFINISHED, tags=tags))]
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        # Ended runs too: a run killed while being canceled, or marked ended from the UI, keeps its slots.
        queued = storage.get_concurrency_run_ids() - {run.run_id for run in runs}
        if queued:
            runs += [r.dagster_run for r in instance.get_run_records(RunsFilter(run_ids=sorted(queued), tags=tags))]
    return [reaped for run in runs if (reaped := reap_if_dead(instance, run)) is not None]


def reap_if_dead(instance: DagsterInstance, run: DagsterRun) -> ReapedRun | None:
    """Fail `run` and free its slots if it was started by the CLI and its process is gone."""
    process = RunProcess.from_tags(run.tags)
    if process is None or process.liveness() is not Liveness.GONE:
        return None
    current = instance.get_run_by_id(run.run_id) or run  # another reaper may have been first
    failed = not current.is_finished
    if failed:
        instance.report_run_failed(
            current, f"The run was killed: its {process.describe(Liveness.GONE)} (SIGKILL, out of memory "
                     "or a reboot) without ending the run. Marked failed by featurestore; re-run its windows.")
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return ReapedRun(run.run_id, run.job_name, process, failed)


def dead_run_sensor() -> SensorDefinition:
    """Reap the dead CLI runs of the daemon's machine every 30 s (see the module docstring)."""

    @sensor(
        name=DEAD_RUN_SENSOR,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Fails runs started by the featurestore CLI on this machine whose process was killed, "
                    "and frees the feature set writer slots they held.",
    )
    def _reap(context: SensorEvaluationContext) -> SkipReason:
        reaped = reap_dead_runs(context.instance)
        for run in reaped:
            context.log.warning(run.describe())
        return SkipReason(" ".join(r.describe() for r in reaped) or "no featurestore run of this machine has lost its process")

    return _reap
