"""Retrieval layer: point-in-time correct training and inference datasets (a local and a Spark
join engine) and online lookups, behind the `FeatureStore` Python API.

May import: `spec`, `planning`, `stores`, `compute` (the Spark session), `streaming` (`FeatureStore.push`),
and the top-level modules.
Never Dagster: model code and notebooks use it without an instance.
"""

from feature_pipelines.retrieval.feature_store import FeatureStore

__all__ = ["FeatureStore"]
