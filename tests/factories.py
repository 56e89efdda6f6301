"""Small feature sets for tests, from one factory instead of a declaration in every file.

The defaults describe the shape most tests need: one string key `user_id`, one float feature
`x` copied from a Delta source `events` with event time `event_time`, daily windows from
2024-01-01. Override only what a test is about.
"""

from __future__ import annotations

from typing import Any

from feature_pipelines import Entity, Feature, FeatureSet, Partitions, Source


def source(
    name: str = "events",
    columns: dict[str, str] | None = None,
    *,
    timestamp: str = "event_time",
    path: str | None = None,
) -> Source:
    """A Delta source at `path` (default: its name) with `columns` (name -> dtype)."""
    columns = columns if columns is not None else {"user_id": "string", "x": "float64"}
    return Source(name=name, path=path or name, timestamp=timestamp, columns={**columns, timestamp: "timestamp"})


def feature_set(
    name: str = "scores",
    *,
    version: int = 1,
    keys: dict[str, str] | None = None,
    features: dict[str, str] | None = None,
    source_: Source | None = None,
    cadence: str = "daily",
    start: str = "2024-01-01",
    **options: Any,
) -> FeatureSet:
    """A feature set keyed by `keys` (name -> dtype) copying `features` (name -> dtype) from its
    source; the source defaults to one holding exactly those columns. `options` go to FeatureSet
    (aggregates, quality, lookbacks, ...); with `aggregates`, pass `features={}`."""
    keys = keys if keys is not None else {"user_id": "string"}
    features = features if features is not None else {"x": "float64"}
    return FeatureSet(
        name=name,
        version=version,
        entities=[Entity(k, dtype) for k, dtype in keys.items()],
        source=source_ or source(columns={**keys, **features}),
        features=[Feature(f, dtype) for f, dtype in features.items()],
        partitions=Partitions(cadence, start=start),
        **options,
    )
