"""Spec layer: the pure, validated declarations users write in `feature_defs/`.

Feature sets, their column types and durations, the definition fingerprint that pins a
materialized version, the catalog that discovers them, and retrieval specs.

May import: `feature_pipelines.errors` only (and pyspark's types for transforms' signatures).
"""
