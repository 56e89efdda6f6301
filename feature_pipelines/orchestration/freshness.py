"""Freshness: each feature set's newest complete window must be materialized within
`FeatureSet.freshness_deadline` after it closes.

Dagster's time-partition freshness checks judge it per partition, so backfilling old windows
does not make a stale set look fresh. Each materialization run re-evaluates them (they target
the offline asset); between runs, one sensor run by the daemon evaluates them when a deadline
passes. A failed freshness check reaches the notifier through the check-failure sensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from dagster import (
    AssetChecksDefinition,
    AssetKey,
    AssetCheckSeverity,
    DefaultSensorStatus,
    SensorDefinition,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

from feature_pipelines.spec.feature_set import FeatureSet

FRESHNESS_SENSOR = "feature_store_freshness"


def deadline_cron(feature_set: FeatureSet) -> str:
    """The cron tick at which the window that closed last must be materialized (UTC)."""
    minutes = int(feature_set.freshness_deadline.total_seconds() // 60)  # < one window, whole minutes (spec)
    if feature_set.partitions.cadence == "hourly":
        return f"{minutes} * * * *"
    return f"{minutes % 60} {minutes // 60} * * *"


def freshness_checks(feature_sets: Iterable[FeatureSet]) -> list[AssetChecksDefinition]:
    """One time-partition freshness check per feature set version, on its offline asset."""
    checks: list[AssetChecksDefinition] = []
    with warnings.catch_warnings():
        # Dagster marks these checks superseded by FreshnessPolicy, which is not partition-aware:
        # a backfill of last year's windows would count as a fresh update.
        warnings.simplefilter("ignore", SupersessionWarning)
        for feature_set in feature_sets:
            checks += build_time_partition_freshness_checks(
                assets=[AssetKey([feature_set.key])],
                deadline_cron=deadline_cron(feature_set),
                timezone="UTC",
                severity=AssetCheckSeverity.ERROR,
            )
    return checks


def freshness_sensor(checks: list[AssetChecksDefinition], feature_sets: Iterable[FeatureSet]) -> SensorDefinition:
    """Evaluates the freshness checks as deadlines pass. Running by default when any feature set
    has its schedule enabled (a set nobody keeps fresh would only raise alarms)."""
    scheduled = any(fs.materialization.schedule_enabled for fs in feature_sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)  # see freshness_checks
        return build_sensor_for_freshness_checks(
            freshness_checks=checks,
            name=FRESHNESS_SENSOR,
            minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.RUNNING if scheduled else DefaultSensorStatus.STOPPED,
        )
