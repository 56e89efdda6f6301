"""Dagster wiring for datasets: per retrieval spec, a training-set asset and a batch-inference asset.

Both depend on the spec's feature set assets, so the asset graph shows their lineage, and each
run records a materialization with the dataset's path and quality figures (a versioned output).
"""

from typing import Optional
from pathlib import Path
from urllib.parse import quote

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, Config, MaterializeResult, MetadataValue, asset
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from feature_pipelines.clock import parse_time
from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.orchestration.metadata import dataset_metadata
from feature_pipelines.retrieval.observations import load_observations, open_observations
from feature_pipelines.orchestration.resources import OfflineStoreResource, SourcesResource
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.retrieval_spec import RetrievalSpec

DATASETS_GROUP = "datasets"


class TrainingDatasetConfig(Config):
    observations: str = Field(description="Delta table or Parquet path of observations: entity keys, a timestamp, labels.")
    timestamp_column: str = Field(default="event_timestamp", description="The observation time column (UTC-aware).")
    output: str = Field(default="", description="Where to write; default <data>/datasets/<spec>/training/<run id>.")
    output_format: str = Field(default="parquet", description="parquet or delta")
    engine: str = Field(default="auto", description="auto, local or spark")
    full_names: Optional[bool] = Field(default=None, description="Name columns feature_set__feature (default: as the spec says).")
    accept_quarantined: bool = Field(default=False, description="Join the rows of quarantined windows (a blocking "
                                     "quality check failed on them) instead of refusing them.")


class InferenceDatasetConfig(Config):
    entities: str = Field(description="Delta table or Parquet path of the entity keys to score.")
    as_of: str = Field(description="The inference time, ISO 8601 with a time zone, e.g. 2024-02-01T00:00:00+00:00.")
    output: str = Field(default="", description="Where to write; default <data>/datasets/<spec>/inference/<run id>.")
    output_format: str = Field(default="parquet", description="parquet or delta")
    engine: str = Field(default="auto", description="auto, local or spark")
    full_names: Optional[bool] = Field(default=None, description="Name columns feature_set__feature (default: as the spec says).")
    accept_quarantined: bool = Field(default=False, description="Join the rows of quarantined windows (a blocking "
                                     "quality check failed on them) instead of refusing them.")


def dataset_key(spec: RetrievalSpec, kind: str) -> AssetKey:
    return AssetKey(["datasets", spec.name, kind])


def serving_metadata(spec: RetrievalSpec, serve_url: str) -> dict[str, MetadataValue]:
    """Where the feature server answers `spec` online, and its API docs: links on the asset's page."""
    return {
        "serving_endpoint": MetadataValue.url(f"{serve_url}/features/{quote(spec.name, safe='')}"),
        "serving_docs": MetadataValue.url(f"{serve_url}/docs"),
    }


def dataset_assets(spec: RetrievalSpec, catalog: Catalog, data_dir: Path, serve_url: str) -> list[AssetsDefinition]:
    """The training and inference dataset assets of one retrieval spec; both link to where the
    feature server answers it (`serve_url`, settings' FEATURESTORE_SERVE_URL)."""
    selections = spec.resolve(catalog)
    request = spec.bind_request_features(catalog, selections)  # checked here: a bad spec stops the code location
    deps = [AssetKey([s.feature_set.key]) for s in selections]
    description = f"Features: {', '.join(str(f) for f in spec.features)}"
    if request:
        description += f". Request features: {', '.join(repr(b.feature) for b in request.bound)}"
    serving = serving_metadata(spec, serve_url)

    @asset(key=dataset_key(spec, "training"), deps=deps, group_name=DATASETS_GROUP, kinds={"pandas", "spark"},
           description=f"Point-in-time correct training set of {spec.name}. {description}", metadata=serving)
    def training(
        context: AssetExecutionContext, config: TrainingDatasetConfig, pyspark: LazyPySparkResource,
        offline_store: OfflineStoreResource, sources: SourcesResource,
    ) -> MaterializeResult:
        store = _feature_store(catalog, offline_store, sources, pyspark)
        output = config.output or str(data_dir / "datasets" / spec.name / "training" / context.run_id)
        context.log.info(f"{spec.name}: joining {config.observations} with {len(selections)} feature set(s)")
        written = store.get_offline_features(
            config.observations, spec, timestamp_column=config.timestamp_column, engine=config.engine,  # type: ignore[arg-type]
            full_names=config.full_names, output=_with_suffix(output, config.output_format),
            output_format=config.output_format, accept_quarantined=config.accept_quarantined,  # type: ignore[arg-type]
        )
        metadata = dataset_metadata(str(written), config.output_format, spec.resolve(catalog, config.full_names),
                                    config.timestamp_column)
        context.log.info(f"{spec.name}: wrote {metadata['dagster/row_count']} rows to {written}")
        return MaterializeResult(metadata=metadata)

    @asset(key=dataset_key(spec, "inference"), deps=deps, group_name=DATASETS_GROUP, kinds={"pandas", "spark"},
           description=f"Batch-inference features of {spec.name} at one time. {description}", metadata=serving)
    def inference(
        context: AssetExecutionContext, config: InferenceDatasetConfig, pyspark: LazyPySparkResource,
        offline_store: OfflineStoreResource, sources: SourcesResource,
    ) -> MaterializeResult:
        as_of = parse_time(config.as_of)
        store = _feature_store(catalog, offline_store, sources, pyspark)
        output = config.output or str(data_dir / "datasets" / spec.name / "inference" / context.run_id)
        entities = load_observations(config.entities)
        context.log.info(f"{spec.name}: features of {len(entities)} entities as of {as_of.isoformat()}")
        written = store.get_inference_features(
            entities, spec, as_of, engine=config.engine, full_names=config.full_names,  # type: ignore[arg-type]
            output=_with_suffix(output, config.output_format), output_format=config.output_format,  # type: ignore[arg-type]
            accept_quarantined=config.accept_quarantined,
        )
        metadata = dataset_metadata(str(written), config.output_format, spec.resolve(catalog, config.full_names), None)
        metadata["as_of"] = as_of.isoformat()
        return MaterializeResult(metadata=metadata)

    return [training, inference]


def check_dataset_config(spec: RetrievalSpec, catalog: Catalog, kind: str, config: dict) -> None:
    """What the `kind` ("training" or "inference") dataset run of `spec` would refuse from its
    config and the observations' metadata alone (the same checks the asset makes): called before
    the run is recorded, so bad input records no run and leaves the dataset's last good
    materialization as it is. Windows the observations need are checked by the run itself (that
    reads their times)."""
    if kind == "training":
        training = TrainingDatasetConfig(**config)
        selections = spec.resolve(catalog, training.full_names)
        open_observations(training.observations, training.timestamp_column, selections,
                          spec.bind_request_features(catalog, selections))
    else:
        inference = InferenceDatasetConfig(**config)
        parse_time(inference.as_of)
        selections = spec.resolve(catalog, inference.full_names)
        open_observations(inference.entities, None, selections, spec.bind_request_features(catalog, selections))


def _feature_store(catalog: Catalog, offline_store: OfflineStoreResource, sources: SourcesResource,
                   pyspark: LazyPySparkResource) -> FeatureStore:
    return FeatureStore(catalog, offline_store.store(), spark=_LazySpark(pyspark), source_root=sources.root,
                        source_storage_options=dict(sources.storage_options))


class _LazySpark:
    """Hands the Spark session to the retrieval engine only if it asks (the local engine never does)."""

    def __init__(self, resource: LazyPySparkResource):
        self._resource = resource

    def __getattr__(self, name: str):
        return getattr(self._resource.spark_session, name)


def _with_suffix(output: str, output_format: str) -> str:
    return output if output_format != "parquet" or output.endswith(".parquet") else f"{output}.parquet"
