"""Feature windows as Dagster partitions."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition, TimeWindowPartitionsDefinition

from feature_pipelines.spec.feature_set import FeatureSet


def partitions_def(feature_set: FeatureSet) -> TimeWindowPartitionsDefinition:
    """Windows as Dagster partitions, in UTC; keys match `Partitions.key_format`."""
    start = feature_set.partitions.start
    if feature_set.partitions.cadence == "hourly":
        return HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC")
    return DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), timezone="UTC")
