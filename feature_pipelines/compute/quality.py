"""Data-quality rules evaluated on a run's windows: unique non-null keys, the table's schema,
row-count band and per-feature expectations, and the blocking verdict over them.

Functions over per-window statistics and the run's offline table, so the same rules serve the
asset checks (`orchestration.checks` turns outcomes into Dagster results), the CLI and the tests.
Each returns a `CheckOutcome` with the windows that broke the rule.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc

from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.stores.offline.delta_store import OfflineTable


@dataclass(frozen=True)
class WindowFeatureStats:
    """One feature over some rows (a window, or a whole run)."""

    count: int
    nulls: int
    minimum: Any
    maximum: Any
    mean: float | None = None  # numeric features only
    distinct: int | None = None  # an estimate (HyperLogLog++)


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    failing_windows: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def keys_check(feature_set: FeatureSet, table: OfflineTable, window_keys: Iterable[str]) -> CheckOutcome:
    """The written windows hold no null key or ts and no duplicate (keys, ts).
    Details: `rows_checked` and `duplicates`."""
    names = [*feature_set.entity_names, feature_set.timestamp]
    rows = table.read(window_keys, columns=names)
    nulls = {n: rows.column(n).null_count for n in names if rows.column(n).null_count}
    duplicates = 0
    if rows.num_rows:
        counts = rows.group_by(names).aggregate([([], "count_all")])
        duplicates = int(pc.sum(pc.greater(counts.column("count_all"), 1)).as_py() or 0)
    passed = not nulls and not duplicates
    description = ("keys and ts are non-null and unique" if passed else
                   f"null keys/ts {nulls}; {duplicates} duplicated (keys, ts)")
    return CheckOutcome(passed, description, details={"rows_checked": rows.num_rows, "duplicates": duplicates})


def schema_check(table: OfflineTable) -> CheckOutcome:
    """The table's columns and types are those the spec gives. Details: `columns` as stored."""
    got, want = table.columns()
    passed = got == want
    description = "columns and types match the spec" if passed else f"table has {got}, spec gives {want}"
    return CheckOutcome(passed, description, details={"columns": dict(got)})


def row_count_history(logged: Mapping[str, Mapping], run_keys: Collection[str]) -> dict[str, int]:
    """Row counts of the windows in the window log (`materialized_windows`) that this run does
    not rewrite: the reference `row_count_check` compares the run's windows with."""
    return {k: e["rows"] for k, e in logged.items() if k not in run_keys}


def row_count_check(feature_set: FeatureSet, rows: dict[str, int], history: dict[str, int]) -> CheckOutcome:
    """Every window's rows within the band around the median of the windows materialized before it.

    `rows` are this run's windows; `history` the row counts of windows already in the store. A
    window is judged once `reference_windows` earlier windows exist; with `row_count_band=None`
    the rule is off.
    """
    band = feature_set.quality.row_count_band
    if band is None:
        return CheckOutcome(True, "row-count band not declared (quality.row_count_band=None)")
    low, high = band
    n = feature_set.quality.reference_windows
    known = dict(history)
    failing, details = [], {}
    for key in sorted(rows):
        earlier = [known[k] for k in sorted(known) if k < key][-n:]
        if len(earlier) < n:
            details[key] = f"{rows[key]} rows (not judged: {len(earlier)} earlier window(s), needs {n})"
        else:
            reference = statistics.median(earlier)
            lo, hi = low * reference, high * reference
            details[key] = f"{rows[key]} rows, expected {lo:g}..{hi:g} (median of {n} earlier: {reference:g})"
            if not lo <= rows[key] <= hi:
                failing.append(key)
        known[key] = rows[key]  # later windows of the same run compare against this one too
    if failing:
        return CheckOutcome(False, f"row count out of band in {len(failing)} window(s): "
                            + "; ".join(f"{k}: {details[k]}" for k in failing), failing, details)
    return CheckOutcome(True, f"row counts within {low:g}x..{high:g}x of recent windows", [], details)


def expectation_checks(
    feature_set: FeatureSet, stats: dict[str, dict[str, WindowFeatureStats]]
) -> dict[str, CheckOutcome]:
    """One outcome per feature with an expectation; `stats` is window -> feature -> stats."""
    outcomes = {}
    for feature, expectation in feature_set.quality.expectations.items():
        failing, problems = [], []
        for key in sorted(stats):
            s = stats[key][feature]
            reasons = []
            if expectation.max_null_rate is not None and s.count:
                rate = s.nulls / s.count
                if rate > expectation.max_null_rate:
                    reasons.append(f"null rate {rate:.1%} > {expectation.max_null_rate:.1%}")
            if expectation.min is not None and s.minimum is not None and s.minimum < expectation.min:
                reasons.append(f"min {s.minimum} < {expectation.min}")
            if expectation.max is not None and s.maximum is not None and s.maximum > expectation.max:
                reasons.append(f"max {s.maximum} > {expectation.max}")
            if reasons:
                failing.append(key)
                problems.append(f"{key}: {', '.join(reasons)}")
        if failing:
            outcomes[feature] = CheckOutcome(False, f"{feature}: " + "; ".join(problems), failing)
        else:
            outcomes[feature] = CheckOutcome(True, f"{feature}: every window meets its expectation")
    return outcomes


def expectations_check(feature_set: FeatureSet, stats: dict[str, dict[str, WindowFeatureStats]]) -> CheckOutcome:
    """Every feature's expectation as one outcome: the failing features' problems, and every
    window that broke any of them."""
    failing = [o for o in expectation_checks(feature_set, stats).values() if not o.passed]
    description = "; ".join(o.description for o in failing) or "every expectation holds in every window"
    return CheckOutcome(not failing, description, sorted({w for o in failing for w in o.failing_windows}))


def blocking_failures(
    feature_set: FeatureSet, outcomes: Mapping[str, CheckOutcome], window_keys: Iterable[str]
) -> dict[str, list[str]]:
    """The verdict recorded for a run's windows: window -> the blocking checks it failed (those
    windows are quarantined); windows that failed none are left out, and with
    `quality.blocking=False` every window is. A failed check counts against the windows it names,
    or against every window of the run when it names none (null or duplicate keys, the table's
    schema)."""
    if not feature_set.quality.blocking:
        return {}
    failed = {name: o.failing_windows for name, o in outcomes.items() if not o.passed}
    verdict = {}
    for key in sorted(set(window_keys)):
        names = [name for name, windows in failed.items() if not windows or key in windows]
        if names:
            verdict[key] = names
    return verdict
