"""The code location Dagster loads (see workspace.yaml and pyproject's [tool.dagster])."""

from feature_pipelines.orchestration.code_location import build_definitions

defs = build_definitions()
