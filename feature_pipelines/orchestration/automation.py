"""Schedules and sensors that keep feature sets fresh, run by the Dagster daemon.

- One schedule per feature set: it materializes the last complete window `materialization.delay`
  after the window closes (late data gets that long to arrive). Its default status comes from
  `materialization.schedule_enabled`.
- One source sensor per feature set: when the source Delta table gets a new version, it requests
  exactly the complete windows that read the added files (late rows included), one run per
  contiguous range. Its cursor is the last source version seen, so nothing is requested twice.
- One run-failure sensor for the code location: it sends each failed run to the notifier, with
  the checks that failed in it.
- One check-failure sensor: it sends the failed checks of each successful run (non-blocking checks
  such as freshness do not fail their run) to the notifier.
"""

from __future__ import annotations

import json
from datetime import datetime

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunStatusSensorContext,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from feature_pipelines.clock import utc_now
from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.spec.durations import format_duration
from feature_pipelines.errors import SourceError
from feature_pipelines.orchestration.notifier import Notification, Notifier, notifier_from_env
from feature_pipelines.settings import Settings
from feature_pipelines.planning.source_changes import source_changes
from feature_pipelines.spec.feature_set import FeatureSet


def schedule_name(feature_set: FeatureSet) -> str:
    return f"{feature_set.key}_schedule"


def source_sensor_name(feature_set: FeatureSet) -> str:
    return f"{feature_set.key}_source_sensor"


def feature_set_schedule(feature_set: FeatureSet, job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    """Materialize the last complete window `materialization.delay` after it closes (the spec
    keeps the delay shorter than one window)."""
    delay = feature_set.schedule_delay
    minutes = int(delay.total_seconds() // 60)
    hourly = feature_set.partitions.cadence == "hourly"
    status = DefaultScheduleStatus.RUNNING if feature_set.materialization.schedule_enabled else DefaultScheduleStatus.STOPPED
    return build_schedule_from_partitioned_job(
        job,
        name=schedule_name(feature_set),
        description=f"Materializes the last complete window of {feature_set.key}, "
                    f"{format_duration(delay)} after it closes.",
        minute_of_hour=minutes % 60,
        hour_of_day=None if hourly else minutes // 60,
        default_status=status,
        tags={"feature_set": feature_set.name, "trigger": "schedule"},
    )


def source_sensor(feature_set: FeatureSet, job: UnresolvedAssetJobDefinition, settings: Settings) -> SensorDefinition:
    """Request the windows that read source files added since the last source version seen."""

    @sensor(
        name=source_sensor_name(feature_set),
        job=job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Re-materializes windows of {feature_set.key} whose source data changed (late rows too).",
    )
    def _sensor(context: SensorEvaluationContext):
        return source_run_requests(feature_set, settings, context.cursor, utc_now(), context)

    return _sensor


def source_run_requests(
    feature_set: FeatureSet,
    settings: Settings,
    cursor: str | None,
    now: datetime,
    context: SensorEvaluationContext | None = None,
) -> list[RunRequest] | SkipReason:
    """The run requests for source changes after `cursor` (a JSON {"version": n}); updates the cursor."""
    seen = json.loads(cursor)["version"] if cursor else None
    try:
        changes = source_changes(feature_set, settings.source_root, settings.source_storage_options, seen, now)
    except SourceError as exc:
        return SkipReason(str(exc))
    version = changes.version
    if context is not None:
        context.update_cursor(json.dumps({"version": version}))
    if seen is None or version <= seen:
        return SkipReason(
            f"source {feature_set.source.name!r} at version {version}: "
            + ("first tick, cursor set" if seen is None else "no new version")
        )
    if not changes.ranges:
        return SkipReason(f"source {feature_set.source.name!r} v{version}: the added files touch no complete window")
    return [
        RunRequest(
            run_key=f"{feature_set.key}:source-v{version}:{r.keys[0]}..{r.keys[-1]}",
            tags={RANGE_START_TAG: r.keys[0], RANGE_END_TAG: r.keys[-1],
                  "feature_set": feature_set.name, "trigger": "source_sensor"},
        )
        for r in changes.ranges
    ]


def failure_sensor(notifier: Notifier | None = None) -> SensorDefinition:
    """Send every failed run of this code location to the notifier."""

    @run_failure_sensor(name="feature_store_run_failures", default_status=DefaultSensorStatus.RUNNING,
                        description="Notifies (webhook or file) about failed feature store runs.")
    def _on_failure(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        causes = []
        for event in context.get_step_failure_events():
            error = getattr(event.event_specific_data, "error", None)
            while error is not None and error.cause is not None:  # Dagster wraps the user's error
                error = error.cause
            causes.append(f"{event.step_key}: {error.message.strip() if error else event.message}")
        checks = [_describe_check(e) for e in failed_checks(context.instance, run.run_id)]
        error = "\n".join([context.failure_event.message or "run failed", *causes, *checks])
        (notifier or notifier_from_env()).send(Notification(
            title=f"Run failed: {run.job_name}",
            text=error,
            details={"run_id": run.run_id, "job": run.job_name, "partition_range": _partition_range(run.tags)},
        ))

    return _on_failure


def check_failure_sensor(notifier: Notifier | None = None) -> SensorDefinition:
    """Send the failed asset checks of every successful run to the notifier. (A failed blocking
    check fails its run, which the run-failure sensor reports.)"""

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, name="feature_store_check_failures",
                       default_status=DefaultSensorStatus.RUNNING,
                       description="Notifies (webhook or file) about failed checks in successful runs, "
                                   "freshness checks included.")
    def _on_success(context: RunStatusSensorContext) -> SkipReason | None:
        run = context.dagster_run
        failed = failed_checks(context.instance, run.run_id)
        if not failed:
            return SkipReason(f"run {run.run_id}: no failed checks")
        (notifier or notifier_from_env()).send(Notification(
            title=f"{len(failed)} check(s) failed: {run.job_name}",
            text="\n".join(_describe_check(e) for e in failed),
            details={
                "run_id": run.run_id,
                "job": run.job_name,
                "partition_range": _partition_range(run.tags),
                "checks": [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed],
            },
        ))
        return None

    return _on_success


def failed_checks(instance: DagsterInstance, run_id: str) -> list[AssetCheckEvaluation]:
    """The asset check evaluations of a run that did not pass."""
    records = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [r.dagster_event.event_specific_data for r in records if r.dagster_event is not None]
    return [e for e in evaluations if isinstance(e, AssetCheckEvaluation) and not e.passed]


def _describe_check(evaluation: AssetCheckEvaluation) -> str:
    summary = evaluation.metadata.get("summary")
    detail = summary.value if summary is not None else (evaluation.description or "")
    return (f"check {evaluation.asset_key.to_user_string()}:{evaluation.check_name} failed "
            f"({evaluation.severity.value}): {detail}".rstrip(": "))


def _partition_range(tags: dict[str, str]) -> str:
    single = tags.get("dagster/partition", "")
    return f"{tags.get(RANGE_START_TAG, single)}..{tags.get(RANGE_END_TAG, single)}"


