"""Dagster wiring: per feature set version, a partitioned offline asset with quality checks and
a downstream online asset; one external asset per source.

No business logic lives here: the assets hand their windows to `materialize_windows` and
`publish_windows`, and the checks to `checks.py`.
"""

import warnings
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    BetaWarning,
    AssetKey,
    AssetsDefinition,
    AssetMaterialization,
    AssetSpec,
    Backoff,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dagster_pyspark import LazyPySparkResource

from feature_pipelines.clock import utc_now
from feature_pipelines.compute.quality import blocking_failures, row_count_history
from feature_pipelines.orchestration.checks import check_outcomes, check_results, check_specs
from feature_pipelines.faults import ONLINE_BEFORE_PUBLISH, fault_point
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.compute.source_schema import check_source
from feature_pipelines.stores.publish import publish_windows
from feature_pipelines.orchestration.partitions import partitions_def
from feature_pipelines.orchestration.metadata import column_lineage, definition_metadata, materialization_metadata, publish_metadata
from feature_pipelines.orchestration.resources import OfflineStoreResource, OnlineStoreResource, SourcesResource
from feature_pipelines.settings import DEFAULT_PUBLISH_RETRY_DELAY, resolve_path
from feature_pipelines.spec.feature_set import FeatureSet, Source, Versioned
from feature_pipelines.planning.window_status import (
    describe_quarantined, staleness_files, status_summary, status_windows, window_statuses,
)


# Dagster's tags for a run over a range of partitions (one run, one Spark job for the range).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def source_key(source: Source) -> AssetKey:
    return AssetKey(["sources", source.name])


POOL_PREFIX = "feature_set_"


def pool_name(feature_set: FeatureSet) -> str:
    """The concurrency pool that serializes writers of one feature set."""
    return f"{POOL_PREFIX}{feature_set.name}"


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


def online_key(feature_set: Versioned) -> AssetKey:
    """The asset that publishes a feature set version's windows to Redis."""
    return AssetKey([f"{feature_set.key}_online"])


def feature_set_assets(feature_set: FeatureSet, file: Path | None, offline_uri: str,
                       publish_retry_delay: float = DEFAULT_PUBLISH_RETRY_DELAY) -> list[AssetsDefinition]:
    """The offline asset (with its quality checks) and, when the set is served online, the
    downstream asset that publishes its windows to Redis."""
    with warnings.catch_warnings():
        # BackfillPolicy is marked beta; single-run backfills are what these assets are built for.
        warnings.simplefilter("ignore", BetaWarning)
        assets = [_offline_asset(feature_set, file, offline_uri)]
        if feature_set.materialization.online:
            assets.append(_online_asset(feature_set, publish_retry_delay))
        return assets


def _common(feature_set: FeatureSet) -> dict:
    return dict(
        partitions_def=partitions_def(feature_set),
        backfill_policy=BackfillPolicy.single_run(),
        pool=pool_name(feature_set),
        owners=list(feature_set.owners),
        tags={**feature_set.tags, "feature_set": feature_set.name, "version": str(feature_set.version)},
        group_name=feature_set.group,
        code_version=str(feature_set.version),
    )


def _offline_asset(feature_set: FeatureSet, file: Path | None, offline_uri: str) -> AssetsDefinition:
    key = AssetKey([feature_set.key])

    @asset(
        key=key,
        deps=[source_key(feature_set.source)],
        kinds={"spark", "delta"},
        description=feature_set.description or None,
        metadata=definition_metadata(feature_set, file, resolve_path(offline_uri, f"{feature_set.name}/v{feature_set.version}"),
                                     source_key(feature_set.source)),
        check_specs=check_specs(feature_set, key),
        **_common(feature_set),
    )
    def _materialize(
        context: AssetExecutionContext,
        pyspark: LazyPySparkResource,
        sources: SourcesResource,
        offline_store: OfflineStoreResource,
    ) -> MaterializeResult:
        stores = Stores(
            source_root=sources.root,
            source_storage_options=dict(sources.storage_options),
            offline=offline_store.store(),
            online=None,
        )
        # The source checked from its Delta log (milliseconds) before the Spark session starts (seconds).
        check_source(feature_set.source, stores.source_root, stores.source_storage_options)
        keys = list(context.partition_keys)
        history = row_count_history(stores.offline.materialized_windows(feature_set), keys)
        context.log.info(f"materializing {feature_set.key}: {len(keys)} window(s) {keys[0]} .. {keys[-1]}")
        result = materialize_windows(pyspark.spark_session, feature_set, keys, stores, run_id=context.run_id)
        context.log.info(f"{feature_set.key}: {result.rows} rows, Delta version {result.table_version} "
                         f"in {result.duration_s:.1f}s")
        metadata = materialization_metadata(result)
        metadata["dagster/column_lineage"] = column_lineage(feature_set, source_key(feature_set.source))
        outcomes = check_outcomes(feature_set, result, history)
        checks = check_results(key, outcomes)
        for check in checks:
            if not check.passed:
                context.log.warning(f"{feature_set.key}: check {check.check_name} failed: {check.description}")
        # The verdict goes into the window log first: a window held back here (quarantined) is
        # never published online by a later repair, and a crash before this line leaves the
        # windows pending (held).
        quarantined = blocking_failures(feature_set, outcomes, keys)
        stores.offline.record_checks(feature_set, keys, quarantined)
        if quarantined:
            context.log.warning(f"{feature_set.key}: quarantined (a blocking check failed; retrieval refuses them "
                                f"unless accepted): {describe_quarantined(quarantined, feature_set)}")
        # The asset-level view of window status, this run's verdicts included (its windows count
        # as materialized: Dagster still sees them in progress while this runs, hence no run states).
        statuses = window_statuses(feature_set, status_windows(feature_set, utc_now()),
                                   stores.offline.materialized_windows(feature_set),
                                   staleness_files(feature_set, sources.root, dict(sources.storage_options)))
        metadata["window_status"] = MetadataValue.md(status_summary(feature_set, statuses))
        return MaterializeResult(metadata=metadata, check_results=checks)

    return _materialize


def _online_asset(feature_set: FeatureSet, retry_delay: float) -> AssetsDefinition:
    @asset(
        key=online_key(feature_set),
        deps=[AssetKey([feature_set.key])],
        kinds={"redis"},
        description=f"Latest values of {feature_set.key} per entity in Redis, published from the offline table "
                    "once its blocking quality checks pass.",
        # Redis hiccups are transient; publishing is idempotent (newer wins), so retrying is safe.
        retry_policy=RetryPolicy(max_retries=3, delay=retry_delay, backoff=Backoff.EXPONENTIAL),
        **_common(feature_set),
    )
    def _publish(
        context: AssetExecutionContext, offline_store: OfflineStoreResource, online_store: OnlineStoreResource
    ) -> MaterializeResult:
        keys = list(context.partition_keys)
        fault_point(ONLINE_BEFORE_PUBLISH)
        store = online_store.store()
        result = publish_windows(feature_set, keys, offline_store.store(), store)
        context.log.info(f"{feature_set.key}: {result.written} of {result.rows} entities written to Redis "
                         f"({result.kept_newer} kept a newer value)")
        if result.repaired:
            context.log.warning(f"{feature_set.key}: published {len(result.repaired)} window(s) that were offline but "
                                f"not online: {', '.join(result.repaired)}")
            for window in result.repaired:  # so the UI shows them as published too
                context.log_event(AssetMaterialization(asset_key=online_key(feature_set), partition=window,
                                                       metadata={"repaired_by_run": context.run_id}))
        return MaterializeResult(metadata=publish_metadata(result, keys, store.url))

    return _publish
