"""Quality rules: row-count band and per-feature expectations, and their spec validation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from feature_pipelines import Expectation, Quality
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.errors import SpecError
from feature_pipelines.compute.quality import WindowFeatureStats, expectation_checks, row_count_check
from tests.helpers import PROJECT_DIR

ACCOUNTS = load_catalog(PROJECT_DIR / "feature_defs").get("accounts")


def test_row_count_band_compares_with_the_median_of_earlier_windows() -> None:
    spec = replace(ACCOUNTS, quality=Quality(row_count_band=(0.5, 2.0)))
    history = {f"2024-01-0{d}": 100 for d in range(1, 8)}
    history["2024-01-04"] = 1000  # an outlier does not move the median
    ok = row_count_check(spec, {"2024-01-08": 120}, history)
    assert ok.passed and "expected 50..200" in ok.details["2024-01-08"]
    collapse = row_count_check(spec, {"2024-01-08": 10, "2024-01-09": 100}, history)
    assert not collapse.passed and collapse.failing_windows == ["2024-01-08"]
    assert "2024-01-08: 10 rows, expected 50..200" in collapse.description


def test_row_count_band_needs_enough_history_and_can_be_turned_off() -> None:
    first = row_count_check(replace(ACCOUNTS, quality=Quality()), {"2024-01-01": 5}, {})
    assert first.passed and first.details["2024-01-01"] == "5 rows (not judged: 0 earlier window(s), needs 7)"
    # Within one run, later windows compare against the earlier ones of the same run.
    one_back = replace(ACCOUNTS, quality=Quality(reference_windows=1))
    spike = row_count_check(one_back, {"2024-01-01": 100, "2024-01-02": 600}, {})
    assert not spike.passed and spike.failing_windows == ["2024-01-02"]
    off = replace(ACCOUNTS, quality=Quality(row_count_band=None))
    assert row_count_check(off, {"2024-01-02": 600}, {"2024-01-01": 1}).passed


def test_expectations_flag_null_spikes_and_out_of_range_values() -> None:
    spec = replace(ACCOUNTS, quality=Quality(expectations={
        "credit_limit": Expectation(max_null_rate=0.1, min=0, max=50_000),
        "segment": Expectation(max_null_rate=0.0),
    }))
    good = WindowFeatureStats(count=100, nulls=2, minimum=500.0, maximum=20_000.0)
    stats = {
        "2024-01-01": {"credit_limit": good, "segment": WindowFeatureStats(100, 0, "a", "z")},
        "2024-01-02": {"credit_limit": WindowFeatureStats(100, 40, -5.0, 20_000.0), "segment": WindowFeatureStats(100, 1, "a", "z")},
    }
    outcomes = expectation_checks(spec, stats)
    assert not outcomes["credit_limit"].passed and outcomes["credit_limit"].failing_windows == ["2024-01-02"]
    assert "2024-01-02: null rate 40.0% > 10.0%, min -5.0 < 0" in outcomes["credit_limit"].description
    assert not outcomes["segment"].passed and "null rate 1.0% > 0.0%" in outcomes["segment"].description
    assert expectation_checks(spec, {"2024-01-01": stats["2024-01-01"]})["credit_limit"].passed


@pytest.mark.parametrize(
    ("quality", "message"),
    [
        (lambda: Quality(expectations={"favourite_colour": Expectation(max_null_rate=0.1)}), "unknown feature 'favourite_colour'"),
        (lambda: Quality(expectations={"segment": Expectation(min=0)}), "needs a numeric feature"),
        (lambda: Quality(row_count_band=(1.5, 2.0)), "0 <= low <= 1 <= high"),
        (lambda: Quality(expectations={"credit_limit": Expectation(max_null_rate=2)}), "between 0 and 1"),
        (lambda: Quality(freshness="soon"), "quality.freshness"),
    ],
)
def test_bad_quality_specs_are_rejected(quality, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        replace(ACCOUNTS, quality=quality())
