"""Schedules and sensors that keep feature sets fresh, run by the Dagster daemon.

- One schedule per feature set: it materializes the last complete window `materialization.delay`
  after the window closes (late data gets that long to arrive). Its default status comes from
  `materialization.schedule_enabled`.
- One source sensor per feature set: when the source Delta table gets a new version, it requests
  exactly the complete windows that read the added files (late rows included), one run per
  contiguous range. Its cursor is the last source version seen, so nothing is requested twice.
- One run-failure sensor for the code location: it sends each failed run to the notifier.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    run_failure_sensor,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from feature_pipelines.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.durations import parse_duration
from feature_pipelines.errors import SourceError, SpecError
from feature_pipelines.notifier import Notification, Notifier, notifier_from_env
from feature_pipelines.settings import Settings
from feature_pipelines.source_changes import affected_windows, open_source, source_files
from feature_pipelines.spec import FeatureSet
from feature_pipelines.windows import contiguous_ranges, window_for_key


def schedule_name(feature_set: FeatureSet) -> str:
    return f"{feature_set.key}_schedule"


def source_sensor_name(feature_set: FeatureSet) -> str:
    return f"{feature_set.key}_source_sensor"


def feature_set_schedule(feature_set: FeatureSet, job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    """Materialize the last complete window `materialization.delay` after it closes."""
    delay = parse_duration(feature_set.materialization.delay, field="materialization.delay")
    minutes = int(delay.total_seconds() // 60)
    hourly = feature_set.partitions.cadence == "hourly"
    if (hourly and minutes >= 60) or (not hourly and minutes >= 24 * 60):
        raise SpecError(
            f"feature set {feature_set.key}: materialization.delay {feature_set.materialization.delay} must be "
            f"shorter than one {'hour' if hourly else 'day'} (the window cadence)."
        )
    status = DefaultScheduleStatus.RUNNING if feature_set.materialization.schedule_enabled else DefaultScheduleStatus.STOPPED
    return build_schedule_from_partitioned_job(
        job,
        name=schedule_name(feature_set),
        description=f"Materializes the last complete window of {feature_set.key}, "
                    f"{feature_set.materialization.delay} after it closes.",
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
        return source_run_requests(feature_set, settings, context.cursor, datetime.now(timezone.utc), context)

    return _sensor


def source_run_requests(
    feature_set: FeatureSet,
    settings: Settings,
    cursor: str | None,
    now: datetime,
    context: SensorEvaluationContext | None = None,
) -> list[RunRequest] | SkipReason:
    """The run requests for source changes after `cursor` (a JSON {"version": n}); updates the cursor."""
    try:
        table = open_source(feature_set.source, settings.source_root, settings.source_storage_options)
    except SourceError as exc:
        return SkipReason(str(exc))
    version = table.version()
    seen = json.loads(cursor)["version"] if cursor else None
    if seen is None or version <= seen:
        if context is not None:
            context.update_cursor(json.dumps({"version": version}))
        return SkipReason(
            f"source {feature_set.source.name!r} at version {version}: "
            + ("first tick, cursor set" if seen is None else "no new version")
        )
    previous = type(table)(table.table_uri, version=seen, storage_options=settings.source_storage_options or None)
    before = {f.path for f in source_files(previous, feature_set.source)}
    added = [f for f in source_files(table, feature_set.source) if f.path not in before]
    keys = affected_windows(feature_set, added, now)
    requests = [
        RunRequest(
            run_key=f"{feature_set.key}:source-v{version}:{r.keys[0]}..{r.keys[-1]}",
            tags={RANGE_START_TAG: r.keys[0], RANGE_END_TAG: r.keys[-1],
                  "feature_set": feature_set.name, "trigger": "source_sensor"},
        )
        for r in contiguous_ranges([window_for_key(feature_set, k) for k in keys])
    ]
    if context is not None:
        context.update_cursor(json.dumps({"version": version}))
    if not requests:
        return SkipReason(f"source {feature_set.source.name!r} v{version}: the added files touch no complete window")
    return requests


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
        error = "\n".join([context.failure_event.message or "run failed", *causes])
        (notifier or notifier_from_env()).send(Notification(
            title=f"Run failed: {run.job_name}",
            text=error,
            details={
                "run_id": run.run_id,
                "job": run.job_name,
                "partition_range": f"{run.tags.get(RANGE_START_TAG, run.tags.get('dagster/partition', ''))}"
                                   f"..{run.tags.get(RANGE_END_TAG, run.tags.get('dagster/partition', ''))}",
            },
        ))

    return _on_failure


