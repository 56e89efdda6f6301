"""Assemble the Dagster code location from the catalog: assets, jobs, schedules, sensors, resources."""

from __future__ import annotations

from dagster import AssetKey, Definitions, define_asset_job, in_process_executor

from feature_pipelines.orchestration.assets import feature_set_assets, online_key, source_spec
from feature_pipelines.orchestration.partitions import partitions_def
from feature_pipelines.orchestration.automation import check_failure_sensor, failure_sensor, feature_set_schedule, source_sensor
from feature_pipelines.orchestration.dead_runs import dead_run_sensor
from feature_pipelines.orchestration.freshness import freshness_checks, freshness_sensor
from feature_pipelines.orchestration.maintenance_job import maintenance_job, maintenance_schedule
from feature_pipelines.spec.catalog import Catalog, load_catalog
from feature_pipelines.orchestration.datasets import dataset_assets, dataset_key
from feature_pipelines.spec.retrieval_spec import load_retrieval_specs
from feature_pipelines.orchestration.resources import build_resources
from feature_pipelines.settings import Settings
from feature_pipelines.spec.feature_set import FeatureSet


def materialize_job_name(feature_set: FeatureSet) -> str:
    return f"materialize_{feature_set.key}"


def materialized_assets(feature_set: FeatureSet) -> list[AssetKey]:
    """What materializing a feature set runs: its offline asset, then its online publish."""
    keys = [AssetKey([feature_set.key])]
    return keys + [online_key(feature_set)] if feature_set.materialization.online else keys


def build_definitions(settings: Settings | None = None, catalog: Catalog | None = None) -> Definitions:
    """Definitions for every feature set in `feature_defs/`, wired to the configured stores."""
    settings = settings or Settings.from_env()
    catalog = catalog if catalog is not None else load_catalog(settings.feature_defs_dir)
    sources = {fs.source.name: fs.source for fs in catalog}
    specs = load_retrieval_specs(settings.feature_defs_dir / "retrieval_specs")
    datasets = [a for spec in specs for a in dataset_assets(spec, catalog, settings.data_dir, settings.serve_url)]
    assets = [a for fs in catalog for a in feature_set_assets(fs, catalog.file_of(fs), settings.offline_uri,
                                                                   settings.publish_retry_delay)]
    materialize_jobs = {
        fs.key: define_asset_job(materialize_job_name(fs), selection=materialized_assets(fs), partitions_def=partitions_def(fs))
        for fs in catalog
    }
    jobs = list(materialize_jobs.values())
    jobs += [
        define_asset_job(f"{kind}_dataset_{spec.name}", selection=[dataset_key(spec, kind)])
        for spec in specs
        for kind in ("training", "inference")
    ]
    freshness = freshness_checks(catalog)
    maintenance = maintenance_job(list(catalog))
    jobs.append(maintenance)
    return Definitions(
        assets=[*assets, *datasets, *(source_spec(s, settings.source_root) for s in sources.values())],
        asset_checks=freshness,
        jobs=jobs,
        schedules=[*(feature_set_schedule(fs, materialize_jobs[fs.key]) for fs in catalog),
                   maintenance_schedule(maintenance)],
        sensors=[
            *(source_sensor(fs, materialize_jobs[fs.key], settings) for fs in catalog),
            failure_sensor(),
            check_failure_sensor(),
            freshness_sensor(freshness, catalog),
            dead_run_sensor(),
        ],
        resources=build_resources(settings),
        # A run's steps share its process: one Spark session per run. Dagster's default starts a
        # process per step, and each would import everything again and start its own Spark JVM,
        # seconds per step, while a feature set's steps (compute, checks, publish) run one after
        # another anyway.
        executor=in_process_executor,
    )
