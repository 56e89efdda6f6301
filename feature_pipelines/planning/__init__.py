"""Planning layer: which windows a run covers, which source range it reads, which windows a
backfill selects and what state each window is in. Pure rules over specs, window logs and
source Delta logs (no rows are read, nothing is written).

May import: `spec`, and the top-level `errors` and `settings`.
"""
