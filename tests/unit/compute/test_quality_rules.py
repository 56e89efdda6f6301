"""Quality rules behind the asset checks: keys, schema, row-count history, expectations, verdict."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from feature_pipelines import Expectation, Quality
from feature_pipelines.compute.quality import (
    CheckOutcome, WindowFeatureStats, blocking_failures, expectations_check, keys_check, row_count_history,
    schema_check,
)
from tests.factories import feature_set

SCORES = feature_set(features={"score": "float64"},
                     quality=Quality(expectations={"score": Expectation(max_null_rate=0.1, min=0, max=1)}))


class _Table:
    """Stands in for the run's offline table: the rules only read rows and columns through it."""

    def __init__(self, rows: pa.Table | None = None, columns=None):
        self.rows, self._columns, self.asked = rows, columns, None

    def read(self, window_keys, columns=None) -> pa.Table:
        self.asked = (list(window_keys), columns)
        return self.rows.select(columns)

    def columns(self):
        return self._columns


def _rows(users: list[str | None], times: list[int | None]) -> pa.Table:
    return pa.table({"user_id": users, "score": [0.5] * len(users), "ts": pa.array(times, pa.int64())})


def test_keys_check_counts_null_keys_and_duplicated_key_times() -> None:
    table = _Table(_rows(["a", "b", "b", "c", None], [1, 2, 2, 3, 4]))
    outcome = keys_check(SCORES, table, ["2024-01-01", "2024-01-02"])
    assert table.asked == (["2024-01-01", "2024-01-02"], ["user_id", "ts"])
    assert not outcome.passed
    assert outcome.description == "null keys/ts {'user_id': 1}; 1 duplicated (keys, ts)"
    assert outcome.details == {"rows_checked": 5, "duplicates": 1}
    clean = keys_check(SCORES, _Table(_rows(["a", "a", "b"], [1, 2, 1])), ["2024-01-01"])
    assert clean.passed and clean.description == "keys and ts are non-null and unique"
    assert clean.details == {"rows_checked": 3, "duplicates": 0}
    empty = keys_check(SCORES, _Table(_rows([], [])), ["2024-01-01"])
    assert empty.passed and empty.details == {"rows_checked": 0, "duplicates": 0}


def test_schema_check_compares_stored_and_declared_columns() -> None:
    want = [("user_id", "string"), ("score", "double")]
    same = schema_check(_Table(columns=(want, want)))
    assert same.passed and same.description == "columns and types match the spec"
    assert same.details == {"columns": {"user_id": "string", "score": "double"}}
    got = [("user_id", "string"), ("score", "float")]
    changed = schema_check(_Table(columns=(got, want)))
    assert not changed.passed
    assert changed.description == f"table has {got}, spec gives {want}"


def test_row_count_history_leaves_out_the_windows_the_run_rewrites() -> None:
    logged = {"2024-01-01": {"rows": 10, "run_id": "a"}, "2024-01-02": {"rows": 0, "run_id": "a"},
              "2024-01-03": {"rows": 7, "run_id": "b"}}
    assert row_count_history(logged, ["2024-01-03", "2024-01-04"]) == {"2024-01-01": 10, "2024-01-02": 0}
    assert row_count_history({}, ["2024-01-01"]) == {}


def test_expectations_check_joins_the_failing_features() -> None:
    def stats(nulls: int, low: float, high: float) -> dict[str, WindowFeatureStats]:
        return {"score": WindowFeatureStats(count=10, nulls=nulls, minimum=low, maximum=high)}

    outcome = expectations_check(SCORES, {"2024-01-02": stats(5, 0.1, 0.9), "2024-01-01": stats(0, -1, 0.5),
                                          "2024-01-03": stats(0, 0.2, 0.4)})
    assert not outcome.passed and outcome.failing_windows == ["2024-01-01", "2024-01-02"]
    assert outcome.description == "score: 2024-01-01: min -1 < 0; 2024-01-02: null rate 50.0% > 10.0%"
    ok = expectations_check(SCORES, {"2024-01-01": stats(0, 0, 1)})
    assert ok.passed and ok.description == "every expectation holds in every window" and ok.failing_windows == []


def test_blocking_verdict_names_the_checks_each_window_failed() -> None:
    """A check that names its failing windows quarantines those; one that names none (keys,
    schema) every window of the run; nothing when the checks are not blocking."""
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    passed = CheckOutcome(True, "ok")
    row_count = CheckOutcome(False, "collapse", ["2024-01-02"])
    expectations = CheckOutcome(False, "null spike", ["2024-01-02", "2024-01-03"])
    keys = CheckOutcome(False, "duplicates")
    assert blocking_failures(SCORES, {"keys": passed, "row_count": passed}, days) == {}
    assert blocking_failures(SCORES, {"row_count": row_count, "expectations": expectations, "keys": passed}, days) == {
        "2024-01-02": ["row_count", "expectations"], "2024-01-03": ["expectations"]}
    assert blocking_failures(SCORES, {"keys": keys, "row_count": row_count}, days) == {
        "2024-01-01": ["keys"], "2024-01-02": ["keys", "row_count"], "2024-01-03": ["keys"]}
    not_blocking = replace(SCORES, quality=replace(SCORES.quality, blocking=False))
    assert blocking_failures(not_blocking, {"keys": keys, "row_count": row_count}, days) == {}
    assert blocking_failures(SCORES, {}, days) == {}
