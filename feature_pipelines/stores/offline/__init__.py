"""The offline store: one Delta table per feature set version, its window log, the executor
write path that commits Spark's files, table upkeep, and streamed events appended to their
source tables and read back per entity.

May import: `spec` and the top-level `errors`, `settings` and `faults`.
"""
