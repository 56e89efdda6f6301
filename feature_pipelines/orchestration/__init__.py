"""Orchestration layer: the Dagster wiring, and the only layer besides `cli` that imports Dagster.

Assets (offline, online, datasets), asset checks, partitions, resources, schedules and sensors,
freshness, the maintenance job, the code location, runs and backfills on an instance (a CLI run
waits for its writer slot civilly; a run whose process was killed is failed and its slot freed),
and the notifier. Wiring only: the rules it applies live in the layers below.

May import: every layer except `cli`.
"""
