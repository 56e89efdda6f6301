"""Dagster wiring: one partitioned asset per feature set version, one external asset per source.

No business logic lives here; the asset hands its windows to `materialize_windows`.
"""

import warnings
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    BetaWarning,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
)
from dagster_pyspark import LazyPySparkResource

from feature_pipelines.materialize import Stores, materialize_windows
from feature_pipelines.metadata import definition_metadata, materialization_metadata
from feature_pipelines.resources import OfflineStoreResource, OnlineStoreResource, SourcesResource
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec import FeatureSet, Source


# Dagster's tags for a run over a range of partitions (one run, one Spark job for the range).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partitions_def(feature_set: FeatureSet) -> TimeWindowPartitionsDefinition:
    """Windows as Dagster partitions, in UTC; keys match `Partitions.key_format`."""
    start = feature_set.partitions.start
    if feature_set.partitions.cadence == "hourly":
        return HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC")
    return DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), timezone="UTC")


def source_key(source: Source) -> AssetKey:
    return AssetKey(["sources", source.name])


def pool_name(feature_set: FeatureSet) -> str:
    """The concurrency pool that serializes writers of one feature set."""
    return f"feature_set_{feature_set.name}"


def source_spec(source: Source, source_root: str) -> AssetSpec:
    return AssetSpec(
        key=source_key(source),
        description=source.description or f"Source table {source.name}",
        group_name="sources",
        kinds={source.format},
        metadata={
            "path": MetadataValue.path(resolve_path(source_root, source.path)),
            "event_time_column": source.timestamp,
        },
    )


def feature_set_asset(
    feature_set: FeatureSet, file: Path | None, offline_uri: str
) -> AssetsDefinition:
    """The partitioned asset that materializes `feature_set`, window by window or range by range."""
    kinds = {"spark", "delta"} | ({"redis"} if feature_set.materialization.online else set())
    with warnings.catch_warnings():
        # BackfillPolicy is marked beta; single-run backfills are what this asset is built for.
        warnings.simplefilter("ignore", BetaWarning)
        return _build(feature_set, file, offline_uri, kinds)


def _build(feature_set: FeatureSet, file: Path | None, offline_uri: str, kinds: set[str]) -> AssetsDefinition:
    @asset(
        key=AssetKey([feature_set.key]),
        partitions_def=partitions_def(feature_set),
        backfill_policy=BackfillPolicy.single_run(),
        pool=pool_name(feature_set),
        deps=[source_key(feature_set.source)],
        kinds=kinds,
        owners=list(feature_set.owners),
        tags={**feature_set.tags, "feature_set": feature_set.name, "version": str(feature_set.version)},
        group_name=feature_set.group,
        description=feature_set.description or None,
        code_version=str(feature_set.version),
        metadata=definition_metadata(feature_set, file, resolve_path(offline_uri, f"{feature_set.name}/v{feature_set.version}")),
    )
    def _materialize(
        context: AssetExecutionContext,
        pyspark: LazyPySparkResource,
        sources: SourcesResource,
        offline_store: OfflineStoreResource,
        online_store: OnlineStoreResource,
    ) -> MaterializeResult:
        stores = Stores(
            source_root=sources.root,
            source_storage_options=dict(sources.storage_options),
            offline=offline_store.store(),
            online=online_store.store() if feature_set.materialization.online else None,
            staging_dir=Path(offline_store.staging_dir),
        )
        keys = list(context.partition_keys)
        context.log.info(f"materializing {feature_set.key}: {len(keys)} window(s) {keys[0]} .. {keys[-1]}")
        result = materialize_windows(pyspark.spark_session, feature_set, keys, stores, run_id=context.run_id)
        context.log.info(
            f"{feature_set.key}: {result.rows} rows, Delta version {result.table_version}, "
            f"{result.online.written if result.online else 0} online keys written in {result.duration_s:.1f}s"
        )
        return MaterializeResult(metadata=materialization_metadata(result))

    return _materialize
