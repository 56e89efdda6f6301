"""Asset checks of a feature set version, evaluated on the windows each run writes. The rules
live in `compute.quality`; this module names them and turns their outcomes into Dagster results.

- `keys_unique_and_not_null`: the written windows hold no null key or ts and no duplicate (keys, ts);
- `schema_matches_spec`: the Delta table's columns and types are those the spec gives;
- `row_count_in_band`: each window's rows within the spec's band around recent windows;
- `expectations`: per-feature null-rate and range expectations declared in the spec.

All are blocking when `quality.blocking` (the default): a failure fails the run, so the
downstream online asset does not run, and quarantines the windows it failed on
(`compute.quality.blocking_failures`): never published online, refused by retrieval unless
accepted; the offline data and the check results stay inspectable.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from feature_pipelines.compute.materialize import MaterializationResult
from feature_pipelines.compute.quality import (
    CheckOutcome, expectations_check, keys_check, row_count_check, schema_check,
)
from feature_pipelines.spec.feature_set import FeatureSet

KEYS = "keys_unique_and_not_null"
SCHEMA = "schema_matches_spec"
ROW_COUNT = "row_count_in_band"
EXPECTATIONS = "expectations"


def check_specs(feature_set: FeatureSet, key: AssetKey) -> list[AssetCheckSpec]:
    blocking = feature_set.quality.blocking
    band = feature_set.quality.row_count_band
    row_count = (f"Each window's rows within {band[0]:g}x..{band[1]:g}x of the median of the "
                 f"{feature_set.quality.reference_windows} windows before it." if band is not None
                 else "Row-count band not declared (quality.row_count_band=None).")
    specs = [
        AssetCheckSpec(KEYS, asset=key, blocking=blocking, description="No null key or ts, no duplicate (keys, ts)."),
        AssetCheckSpec(SCHEMA, asset=key, blocking=blocking, description="The Delta table's columns match the spec."),
        AssetCheckSpec(ROW_COUNT, asset=key, blocking=blocking, description=row_count),
    ]
    if feature_set.quality.expectations:
        listed = ", ".join(sorted(feature_set.quality.expectations))
        specs.append(AssetCheckSpec(EXPECTATIONS, asset=key, blocking=blocking,
                                    description=f"Null-rate and range expectations of {listed}."))
    return specs


def check_outcomes(
    feature_set: FeatureSet, result: MaterializationResult, history: dict[str, int],
) -> dict[str, CheckOutcome]:
    """Check name -> the rule's outcome on the windows of `result` (read through the table the
    run wrote); `history` holds earlier windows' row counts."""
    outcomes = {
        KEYS: keys_check(feature_set, result.table, result.window_keys),
        SCHEMA: schema_check(result.table),
        ROW_COUNT: row_count_check(feature_set, result.rows_per_window, history),
    }
    if feature_set.quality.expectations:
        outcomes[EXPECTATIONS] = expectations_check(feature_set, result.window_stats)
    return outcomes


def check_results(key: AssetKey, outcomes: dict[str, CheckOutcome]) -> list[AssetCheckResult]:
    """The outcomes as Dagster check results, each with its figures as metadata."""
    return [
        AssetCheckResult(
            asset_key=key, check_name=name, passed=outcome.passed, severity=AssetCheckSeverity.ERROR,
            description=outcome.description,
            metadata={"summary": outcome.description, **_metadata(name, outcome)},
        )
        for name, outcome in outcomes.items()
    ]


def _metadata(name: str, outcome: CheckOutcome) -> dict:
    if name == KEYS:
        return {"rows_checked": outcome.details["rows_checked"], "duplicates": outcome.details["duplicates"]}
    if name == SCHEMA:
        return {"columns": MetadataValue.json(outcome.details["columns"])}
    if name == ROW_COUNT:
        return {"failing_windows": MetadataValue.json(outcome.failing_windows),
                "windows": MetadataValue.json(outcome.details)}
    return {"failing_windows": MetadataValue.json(outcome.failing_windows)}
