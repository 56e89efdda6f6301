"""Spec layer: the pure, validated declarations users write in `feature_defs/`.

Feature sets, their column types and durations, the definition fingerprint that pins a
materialized version, the catalog that discovers them, retrieval specs, and request-time features
(declared functions, and their one evaluation, which every retrieval path and the server call).

May import: `feature_pipelines.errors` only (and pyspark's types for transforms' signatures).
"""
