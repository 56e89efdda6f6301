"""Compute layer: turn source rows into validated feature rows with Spark, evaluate the quality
rules on them and hand them to the offline store. Also builds the Spark session.

May import: `spec`, `planning`, `stores`, and the top-level `errors`, `settings` and `faults`.
"""
