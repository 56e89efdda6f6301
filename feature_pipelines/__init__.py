"""A feature store on Dagster: declare feature sets once; compute, backfill, serve and retrieve them."""

from feature_pipelines.errors import FeatureStoreError
from feature_pipelines.spec.feature_set import (
    Aggregate,
    Entity,
    Expectation,
    Feature,
    FeatureSet,
    Materialization,
    Partitions,
    Quality,
    Source,
    WindowContext,
)

__all__ = [
    "Aggregate",
    "Entity",
    "Expectation",
    "Feature",
    "FeatureSet",
    "FeatureStoreError",
    "Materialization",
    "Partitions",
    "Quality",
    "Source",
    "WindowContext",
]
