"""The Dagster job and schedule that keep every feature set version's Delta tables compact."""


from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    DefaultScheduleStatus,
    JobDefinition,
    OpDefinition,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)

from feature_pipelines.orchestration.assets import pool_name
from feature_pipelines.stores.offline.upkeep import DEFAULT_RETENTION_HOURS, maintain_feature_set
from feature_pipelines.orchestration.resources import OfflineStoreResource
from feature_pipelines.spec.feature_set import FeatureSet

MAINTENANCE_JOB = "delta_maintenance"


class MaintenanceConfig(Config):
    retention_hours: int = DEFAULT_RETENTION_HOURS


def _maintenance_op(feature_set: FeatureSet) -> OpDefinition:
    # The feature set's pool: maintenance never commits while a run writes the same table.
    @op(name=f"maintain_{feature_set.key}", pool=pool_name(feature_set),
        description=f"Compact, checkpoint and vacuum the Delta tables of {feature_set.key}.")
    def _maintain(context: OpExecutionContext, config: MaintenanceConfig, offline_store: OfflineStoreResource) -> None:
        for upkeep in maintain_feature_set(feature_set, offline_store.store(), config.retention_hours):
            context.log.info(f"{upkeep.uri}: {upkeep.files_before} -> {upkeep.files_after} files, "
                             f"{upkeep.vacuumed_files} vacuumed, version {upkeep.version} ({upkeep.duration_s:.1f}s)")
            table = "window_log" if "/_windows/" in upkeep.uri.replace("\\", "/") else "table"
            context.log_event(AssetObservation(asset_key=AssetKey([feature_set.key]), metadata={
                f"maintenance/{table}/files_before": upkeep.files_before,
                f"maintenance/{table}/files_after": upkeep.files_after,
                f"maintenance/{table}/vacuumed_files": upkeep.vacuumed_files,
                f"maintenance/{table}/delta_version": upkeep.version,
            }))

    return _maintain


def maintenance_job(feature_sets: list[FeatureSet]) -> JobDefinition:
    ops = [_maintenance_op(fs) for fs in feature_sets]

    @job(name=MAINTENANCE_JOB, description="Delta upkeep of every feature set version: compaction, checkpoint, "
                                           "expired log cleanup, vacuum (files older than retention_hours).")
    def _job() -> None:
        for maintain in ops:
            maintain()

    return _job


def maintenance_schedule(maintenance: JobDefinition) -> ScheduleDefinition:
    """Daily at 03:30 UTC, on by default (it only rewrites files, never values)."""
    return ScheduleDefinition(name=f"{MAINTENANCE_JOB}_schedule", job=maintenance, cron_schedule="30 3 * * *",
                              execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING)
