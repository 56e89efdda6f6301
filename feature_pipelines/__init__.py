"""A feature store on Dagster: declare feature sets once; compute, backfill, serve and retrieve them.

The public API. Feature definitions (`feature_defs/`) import the spec classes from here;
`FeatureStore` is imported on first use, so a definition file does not load the stores.
"""

from typing import TYPE_CHECKING, Any

from feature_pipelines.errors import (
    CatalogError,
    EventError,
    EventLogError,
    FeatureStoreError,
    OfflineStoreError,
    OnlineStoreError,
    QualityCheckError,
    RequestFeatureError,
    RequestFieldError,
    RetrievalError,
    SourceError,
    SpecError,
    TransformOutputError,
    VersionConflictError,
    WindowError,
)
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
from feature_pipelines.spec.request_features import request_feature
from feature_pipelines.spec.retrieval_spec import RetrievalSpec

if TYPE_CHECKING:
    from feature_pipelines.retrieval.feature_store import FeatureStore


def __getattr__(name: str) -> Any:
    if name == "FeatureStore":
        from feature_pipelines.retrieval.feature_store import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'feature_pipelines' has no attribute {name!r}")


__all__ = [
    "Aggregate",
    "CatalogError",
    "Entity",
    "EventError",
    "EventLogError",
    "Expectation",
    "Feature",
    "FeatureSet",
    "FeatureStore",
    "FeatureStoreError",
    "Materialization",
    "OfflineStoreError",
    "OnlineStoreError",
    "Partitions",
    "Quality",
    "QualityCheckError",
    "RequestFeatureError",
    "RequestFieldError",
    "RetrievalError",
    "RetrievalSpec",
    "Source",
    "SourceError",
    "SpecError",
    "TransformOutputError",
    "VersionConflictError",
    "WindowContext",
    "WindowError",
    "request_feature",
]
