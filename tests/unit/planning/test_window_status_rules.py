"""Window status rules from the window log, the run states and the source files."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from feature_pipelines.errors import WindowError
from feature_pipelines.planning.source_changes import SourceFile
from feature_pipelines.planning.window_status import (
    FAILED, IN_PROGRESS, last_complete_window, status_summary, status_windows, window_statuses,
)
from tests.factories import feature_set

UTC = timezone.utc
SCORES = feature_set()
WRITTEN = datetime(2024, 1, 10, tzinfo=UTC)


def entry(rows: int, run_id: str = "run-1", at: datetime = WRITTEN) -> dict:
    return {"rows": rows, "materialized_at": at, "run_id": run_id, "table_version": 1}


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
