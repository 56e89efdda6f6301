"""Window status rules from the window log, the run states and the source files."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from feature_pipelines.errors import WindowError
from feature_pipelines.planning.source_changes import SourceFile, SourceSpan
from feature_pipelines.planning.window_status import (
    FAILED, IN_PROGRESS, describe_status, last_complete_window, status_summary, status_windows, window_statuses,
)
from tests.factories import feature_set

UTC = timezone.utc
SCORES = feature_set()
WRITTEN = datetime(2024, 1, 10, tzinfo=UTC)


def entry(rows: int, run_id: str = "run-1", at: datetime = WRITTEN, checks: str | None = None,
          failed_checks: list[str] | None = None) -> dict:
    """A window log entry; `failed_checks` as the log gives it (a list only with a failed verdict)."""
    return {"rows": rows, "materialized_at": at, "run_id": run_id, "table_version": 1, "checks": checks,
            "failed_checks": failed_checks}


def test_status_windows_default_to_every_complete_window() -> None:
    now = datetime(2024, 1, 4, 5, tzinfo=UTC)
    assert [w.key for w in status_windows(SCORES, now)] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert status_windows(SCORES, datetime(2024, 1, 1, 5, tzinfo=UTC)) == []  # the first window is still open
    assert [w.key for w in status_windows(SCORES, now, "2024-01-03", "2024-01-06")] == [
        "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-06",
    ]
    with pytest.raises(WindowError, match="before its start"):
        status_windows(SCORES, now, "2024-01-03", "2024-01-02")
    assert last_complete_window(SCORES, now) == "2024-01-03"


def test_run_states_come_first_then_the_log_then_staleness() -> None:
    windows = status_windows(SCORES, datetime(2024, 1, 8, tzinfo=UTC), "2024-01-01", "2024-01-06")
    logged = {
        "2024-01-01": entry(10),
        "2024-01-02": entry(11, run_id=""),
        "2024-01-03": entry(12),
        "2024-01-04": entry(13, at=datetime(2024, 1, 10)),  # naive times in the log are UTC
    }
    # Changed after the windows were written: events of 01-02 (stale) and of 01-04 (but its run is in progress).
    files = [
        SourceFile("old.parquet", datetime(2024, 1, 9, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC),
                   datetime(2024, 1, 6, tzinfo=UTC)),
        SourceFile("late.parquet", datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 2, 5, tzinfo=UTC),
                   datetime(2024, 1, 2, 6, tzinfo=UTC)),
        SourceFile("later.parquet", datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 4, 5, tzinfo=UTC),
                   datetime(2024, 1, 4, 6, tzinfo=UTC)),
    ]
    states = {"2024-01-03": FAILED, "2024-01-04": IN_PROGRESS, "2024-01-05": None}
    statuses = window_statuses(SCORES, windows, logged, files, states)
    assert [(s.key, s.status) for s in statuses] == [
        ("2024-01-01", "materialized"), ("2024-01-02", "stale"), ("2024-01-03", "failed"),
        ("2024-01-04", "in progress"), ("2024-01-05", "missing"), ("2024-01-06", "missing"),
    ]
    first, second = statuses[0], statuses[1]
    assert (first.rows, first.materialized_at, first.run_id) == (10, WRITTEN, "run-1")
    assert second.run_id is None and statuses[3].materialized_at == WRITTEN and statuses[4].rows is None
    # Unknown source files: nothing is stale; no run states: the log decides.
    assert [s.status for s in window_statuses(SCORES, windows, logged, None)] == [
        "materialized", "materialized", "materialized", "materialized", "missing", "missing",
    ]


def test_the_lookback_makes_later_windows_stale_too() -> None:
    with_lookback = replace(SCORES, source_lookback="1d")
    windows = status_windows(with_lookback, datetime(2024, 1, 8, tzinfo=UTC), "2024-01-02", "2024-01-04")
    logged = {w.key: entry(1) for w in windows}
    files = [SourceFile("late.parquet", datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 2, 5, tzinfo=UTC),
                        datetime(2024, 1, 2, 6, tzinfo=UTC))]
    assert [s.status for s in window_statuses(with_lookback, windows, logged, files)] == [
        "stale", "stale", "materialized",
    ]


def test_summary_counts_each_status_and_lists_the_other_windows_as_ranges() -> None:
    windows = status_windows(SCORES, datetime(2024, 1, 8, tzinfo=UTC), "2024-01-01", "2024-01-05")
    statuses = window_statuses(SCORES, windows, {"2024-01-01": entry(1), "2024-01-02": entry(1)}, None,
                               {"2024-01-05": FAILED})
    assert status_summary(SCORES, statuses) == "\n".join([
        "| status | windows | which |",
        "|---|---|---|",
        "| materialized | 2 |  |",
        "| missing | 2 | 2024-01-03..2024-01-04 |",
        "| failed | 1 | 2024-01-05 |",
    ])


def test_a_window_whose_blocking_check_failed_is_quarantined_with_the_checks_named() -> None:
    windows = status_windows(SCORES, datetime(2024, 1, 8, tzinfo=UTC), "2024-01-01", "2024-01-07")
    logged = {
        "2024-01-01": entry(40, checks="passed"),
        "2024-01-02": entry(5, checks="failed", failed_checks=["row_count_in_band"]),
        "2024-01-03": entry(40, checks="failed", failed_checks=["expectations", "row_count_in_band"]),
        "2024-01-04": entry(40, checks="failed", failed_checks=["row_count_in_band"]),
        "2024-01-05": entry(40, checks="failed", failed_checks=[]),  # a log from before check names
        "2024-01-06": entry(40, checks="pending"),  # a run died before its checks: not known bad
        "2024-01-07": entry(40, checks="failed", failed_checks=["expectations"]),
    }
    # Touches every window: quarantine outranks staleness.
    files = [SourceFile("late.parquet", datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC),
                        datetime(2024, 1, 7, 5, tzinfo=UTC))]
    # The blocking check failed its run, so Dagster says failed; a running re-run is in progress.
    states = {"2024-01-02": FAILED, "2024-01-03": FAILED, "2024-01-07": IN_PROGRESS}
    statuses = window_statuses(SCORES, windows, logged, files, states)
    assert [(s.key, s.status, s.failed_checks) for s in statuses] == [
        ("2024-01-01", "stale", ()),
        ("2024-01-02", "quarantined", ("row_count_in_band",)),
        ("2024-01-03", "quarantined", ("expectations", "row_count_in_band")),
        ("2024-01-04", "quarantined", ("row_count_in_band",)),
        ("2024-01-05", "quarantined", ()),
        ("2024-01-06", "stale", ()),
        ("2024-01-07", "in progress", ("expectations",)),
    ]
    assert statuses[1].rows == 5 and statuses[1].materialized_at == WRITTEN
    assert describe_status(statuses, "quarantined", SCORES) == (
        "2024-01-02, 2024-01-04 (failed row_count_in_band); 2024-01-03 (failed expectations, row_count_in_band); "
        "2024-01-05 (failed checks not recorded)")
    assert status_summary(SCORES, statuses).splitlines()[2:] == [
        "| quarantined | 4 | 2024-01-02, 2024-01-04 (failed row_count_in_band); 2024-01-03 (failed expectations, "
        "row_count_in_band); 2024-01-05 (failed checks not recorded) |",
        "| in progress | 1 | 2024-01-07 |",
        "| stale | 2 | 2024-01-01, 2024-01-06 |",
    ]
    # A re-run whose checks passed replaced the verdict: the quarantine is lifted.
    lifted = {**logged, "2024-01-02": entry(40, checks="passed")}
    assert [s.status for s in window_statuses(SCORES, windows[1:2], lifted, None)] == ["materialized"]


def span_files(earliest: datetime, newest: datetime) -> list[SourceFile]:
    """A source of two files whose events run from `earliest` to `newest`, unchanged since."""
    middle = earliest + (newest - earliest) / 2
    return [SourceFile("a.parquet", datetime(2024, 1, 1, tzinfo=UTC), earliest, middle),
            SourceFile("b.parquet", datetime(2024, 1, 1, tzinfo=UTC), middle, newest)]


def test_windows_the_source_has_no_events_for_are_no_source_data_not_missing() -> None:
    windows = status_windows(SCORES, datetime(2024, 1, 12, tzinfo=UTC))  # 2024-01-01..2024-01-11
    # Events from 01-03 05:00 to 01-08 00:00 (the first instant of 01-08): 01-01 and 01-02 end before
    # the earliest event, 01-09.. start after the newest.
    files = span_files(datetime(2024, 1, 3, 5, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC))
    logged = {"2024-01-02": entry(0), "2024-01-04": entry(3), "2024-01-10": entry(0)}
    states = {"2024-01-01": FAILED, "2024-01-11": IN_PROGRESS, "2024-01-06": FAILED}
    statuses = {s.key: s.status for s in window_statuses(SCORES, windows, logged, files, states)}
    assert statuses == {
        "2024-01-01": "failed",  # run states and the log come first, wherever the source is
        "2024-01-02": "materialized",
        "2024-01-03": "missing", "2024-01-04": "materialized", "2024-01-05": "missing", "2024-01-06": "failed",
        "2024-01-07": "missing", "2024-01-08": "missing",
        "2024-01-09": "no source data",
        "2024-01-10": "materialized",
        "2024-01-11": "in progress",
    }
    assert status_summary(SCORES, window_statuses(SCORES, windows, {}, files)).splitlines()[2:] == [
        "| missing | 6 | 2024-01-03..2024-01-08 |",
        "| no source data | 5 | 2024-01-01..2024-01-02, 2024-01-09..2024-01-11 |",
    ]


def test_no_source_data_needs_known_statistics() -> None:
    windows = status_windows(SCORES, datetime(2024, 1, 4, tzinfo=UTC))  # 2024-01-01..2024-01-03
    no_stats = [SourceFile("c.parquet", datetime(2024, 1, 1, tzinfo=UTC), None, None)]
    one_day = span_files(datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 2, 23, tzinfo=UTC))
    cases = [
        (None, ["missing"] * 3),  # no readable Delta source: unknown, so missing
        ([], ["no source data"] * 3),  # a source without rows
        (no_stats, ["missing"] * 3),  # a file without statistics may hold any time
        (one_day + no_stats, ["missing"] * 3),
        (one_day, ["no source data", "missing", "no source data"]),
    ]
    for files, expected in cases:
        assert [s.status for s in window_statuses(SCORES, windows, {}, files)] == expected, files


def test_the_span_boundaries_follow_the_half_open_windows() -> None:
    [day] = status_windows(SCORES, datetime(2024, 1, 3, tzinfo=UTC), "2024-01-02", "2024-01-02")
    midnight = datetime(2024, 1, 2, tzinfo=UTC)
    next_midnight = datetime(2024, 1, 3, tzinfo=UTC)
    assert not SourceSpan(next_midnight, next_midnight).has_data_for(day)  # the earliest event is in the next window
    assert SourceSpan(next_midnight - timedelta(microseconds=1), next_midnight).has_data_for(day)
    assert SourceSpan(midnight - timedelta(days=9), midnight).has_data_for(day)  # the newest event opens the window
    assert not SourceSpan(midnight - timedelta(days=9), midnight - timedelta(microseconds=1)).has_data_for(day)
    assert not SourceSpan(None, None).has_data_for(day)
