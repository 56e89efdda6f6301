"""A feature store on Dagster: declare feature sets once; compute, backfill, serve and retrieve them."""

from feature_pipelines.errors import FeatureStoreError
from feature_pipelines.spec import (
    Aggregate,
    Entity,
    Feature,
    FeatureSet,
    Materialization,
    Partitions,
    Source,
    WindowContext,
)

__all__ = [
    "Aggregate",
    "Entity",
    "Feature",
    "FeatureSet",
    "FeatureStoreError",
    "Materialization",
    "Partitions",
    "Source",
    "WindowContext",
]
