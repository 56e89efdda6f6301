"""`execute_in_process` in two steps: record the run, then execute it.

Between the two the run exists in the instance, tagged with its process (run_process.py), and
waits for its writer slot outside Dagster's executor (writer_slots.py). Dagster's
`JobDefinition.execute_in_process` records and executes in one call; these two functions are its
body split in two, with the same (private) parts, so the run is executed exactly as it would be
there: ephemeral job (in-process executor, in-memory IO manager), same plan, same events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dagster import DagsterEvent, DagsterInstance, DagsterRun, DagsterRunStatus, JobDefinition
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import ExecuteRunWithPlanIterable, create_execution_plan, job_execution_iterator
from dagster._core.execution.context_creation_job import (
    PlanOrchestrationContextManager,
    orchestration_context_event_generator,
)
from dagster._core.execution.plan.plan import ExecutionPlan


@dataclass(frozen=True)
class RecordedRun:
    job: InMemoryJob
    plan: ExecutionPlan
    run: DagsterRun
    run_config: Mapping[str, object]


def record_run(job: JobDefinition, instance: DagsterInstance, run_config: Mapping[str, object] | None,
               tags: Mapping[str, str]) -> RecordedRun:
    """Create the run of `job` in the instance, STARTED, without executing anything yet."""
    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={})
    in_memory = InMemoryJob(job_def=ephemeral)
    run_config = dict(run_config or {})
    plan = create_execution_plan(in_memory, run_config=run_config,
                                 instance_ref=instance.get_ref() if instance.is_persistent else None)
    # STARTED, not NOT_STARTED: the daemon's run monitoring fails NOT_STARTED runs after
    # `start_timeout_seconds`, and this run may wait longer than that for its writer slot.
    run = instance.create_run_for_job(job_def=ephemeral, execution_plan=plan, run_config=run_config,
                                      tags={**ephemeral.run_tags, **tags}, status=DagsterRunStatus.STARTED,
                                      asset_selection=frozenset())
    return RecordedRun(in_memory, plan, run, run_config)


def execute_recorded_run(recorded: RecordedRun, instance: DagsterInstance,
                         on_event: Callable[[DagsterEvent], None] | None = None) -> list[DagsterEvent]:
    """Execute a run made by `record_run`, in this process; raise what a step raised. `on_event`
    sees each event as it happens (for progress), before the run ends."""
    context = PlanOrchestrationContextManager(
        context_event_generator=orchestration_context_event_generator,
        job=recorded.job,
        execution_plan=recorded.plan,
        dagster_run=recorded.run,
        instance=instance,
        run_config=recorded.run_config,
        executor_defs=None,
        output_capture=None,
        raise_on_error=True,
    )
    events = []
    for event in ExecuteRunWithPlanIterable(execution_plan=recorded.plan, iterator=job_execution_iterator,
                                            execution_context_manager=context):
        events.append(event)
        if on_event is not None:
            on_event(event)
    return events
