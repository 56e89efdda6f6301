"""Asset checks of a feature set version, evaluated on the windows each run writes.

- `keys_unique_and_not_null`: the written windows hold no null key or ts and no duplicate (keys, ts);
- `schema_matches_spec`: the Delta table's columns and types are those the spec gives;
- `row_count_in_band`: each window's rows within the spec's band around recent windows;
- `expectations`: per-feature null-rate and range expectations declared in the spec.

All are blocking when `quality.blocking` (the default): a failure stops the run's windows from
reaching the online store (the downstream online asset does not run); the offline data and the
check results stay inspectable.
"""

from __future__ import annotations

import pyarrow.compute as pc
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.compute.materialize import MaterializationResult
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, table_columns
from feature_pipelines.compute.quality import expectation_checks, row_count_check
from feature_pipelines.spec.feature_set import WINDOW_KEY_COLUMN, FeatureSet

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


def evaluate_checks(
    feature_set: FeatureSet, key: AssetKey, result: MaterializationResult, history: dict[str, int],
    offline: DeltaOfflineStore,
) -> list[AssetCheckResult]:
    """The check results for the windows of `result`; `history` holds earlier windows' row counts."""
    checks = [_keys_check(feature_set, key, result, offline), _schema_check(feature_set, key, offline)]
    rows = row_count_check(feature_set, result.rows_per_window, history)
    checks.append(_result(key, ROW_COUNT, rows.passed, rows.description, {
        "failing_windows": MetadataValue.json(rows.failing_windows),
        "windows": MetadataValue.json(rows.details),
    }))
    if feature_set.quality.expectations:
        outcomes = expectation_checks(feature_set, result.window_stats)
        failing = [o for o in outcomes.values() if not o.passed]
        description = "; ".join(o.description for o in failing) or "every expectation holds in every window"
        checks.append(_result(key, EXPECTATIONS, not failing, description, {
            "failing_windows": MetadataValue.json(sorted({w for o in failing for w in o.failing_windows})),
        }))
    return checks


def _keys_check(feature_set: FeatureSet, key: AssetKey, result: MaterializationResult,
                offline: DeltaOfflineStore) -> AssetCheckResult:
    names = [*feature_set.entity_names, feature_set.timestamp]
    rows = read_delta(offline.table(feature_set), columns=names,
                      filter=pc.field(WINDOW_KEY_COLUMN).isin(result.window_keys),
                      prune=[(WINDOW_KEY_COLUMN, "in", list(result.window_keys))])
    nulls = {n: rows.column(n).null_count for n in names if rows.column(n).null_count}
    duplicates = 0
    if rows.num_rows:
        counts = rows.group_by(names).aggregate([([], "count_all")])
        duplicates = int(pc.sum(pc.greater(counts.column("count_all"), 1)).as_py() or 0)
    passed = not nulls and not duplicates
    description = ("keys and ts are non-null and unique" if passed else
                   f"null keys/ts {nulls}; {duplicates} duplicated (keys, ts)")
    return _result(key, KEYS, passed, description, {"rows_checked": rows.num_rows, "duplicates": duplicates})


def _schema_check(feature_set: FeatureSet, key: AssetKey, offline: DeltaOfflineStore) -> AssetCheckResult:
    got, want = table_columns(offline.table(feature_set), feature_set)
    passed = got == want
    description = "columns and types match the spec" if passed else f"table has {got}, spec gives {want}"
    return _result(key, SCHEMA, passed, description, {"columns": MetadataValue.json(dict(got))})


def _result(key: AssetKey, name: str, passed: bool, description: str, metadata: dict) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key, check_name=name, passed=passed, severity=AssetCheckSeverity.ERROR,
        description=description, metadata={"summary": description, **metadata},
    )
