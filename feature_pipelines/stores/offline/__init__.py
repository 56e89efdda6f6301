"""The offline store: one Delta table per feature set version, its window log, the executor
write path that commits Spark's files, and table upkeep.

May import: `spec` and the top-level `errors`, `settings` and `faults`.
"""
