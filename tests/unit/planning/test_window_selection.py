"""Backfill window selection and the source-reach checks, from plain inputs."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from feature_pipelines.errors import WindowError
from feature_pipelines.planning.window_selection import check_source_reaches, check_windows_closed, select_windows
from feature_pipelines.planning.window_status import FAILED, IN_PROGRESS
from feature_pipelines.planning.windows import windows_between
from tests.factories import feature_set

SCORES = feature_set()
WINDOWS = windows_between(SCORES, "2024-01-01", "2024-01-05")
UTC = timezone.utc


def test_without_a_filter_every_window_is_selected() -> None:
    keys = select_windows(WINDOWS, materialized={"2024-01-02": {}}, run_states={"2024-01-03": FAILED})
    assert keys == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]


def test_only_missing_skips_the_logged_windows() -> None:
    logged = {"2024-01-02": {"rows": 3}, "2024-01-04": {"rows": 0}, "2023-12-31": {"rows": 1}}
    assert select_windows(WINDOWS, materialized=logged, run_states={}, only_missing=True) == [
        "2024-01-01", "2024-01-03", "2024-01-05",
    ]


def test_failed_takes_only_windows_whose_last_run_failed() -> None:
    states = {"2024-01-02": FAILED, "2024-01-03": IN_PROGRESS, "2024-01-05": FAILED, "2024-01-04": None}
    assert select_windows(WINDOWS, materialized={}, run_states=states, failed=True) == ["2024-01-02", "2024-01-05"]


def test_both_filters_take_the_union_in_window_order() -> None:
    keys = select_windows(WINDOWS, materialized={k: {} for k in ("2024-01-01", "2024-01-02", "2024-01-03")},
                          run_states={"2024-01-01": FAILED}, only_missing=True, failed=True)
    assert keys == ["2024-01-01", "2024-01-04", "2024-01-05"]


def test_windows_that_have_not_closed_are_refused() -> None:
    now = datetime(2024, 1, 4, 12, tzinfo=UTC)
    check_windows_closed(SCORES, ["2024-01-02", "2024-01-03"], now)
    with pytest.raises(WindowError, match=r"windows 2024-01-04\.\.2024-01-05 of scores_v1 have not closed yet "
                                          r"\(now is 2024-01-04T12:00:00\+00:00\)"):
        check_windows_closed(SCORES, ["2024-01-03", "2024-01-04", "2024-01-05"], now)


def test_windows_after_the_newest_source_event_are_refused() -> None:
    newest = datetime(2024, 1, 3, 8, tzinfo=UTC)
    check_source_reaches(SCORES, ["2024-01-01", "2024-01-03"], newest)  # 01-03 starts before the newest event
    with pytest.raises(WindowError, match=r"windows 2024-01-04, 2024-01-06 of scores_v1 have no source data yet: "
                                          r"source 'events' has its newest event at 2024-01-03T08:00:00\+00:00"):
        check_source_reaches(SCORES, ["2024-01-02", "2024-01-04", "2024-01-06"], newest)
    with pytest.raises(WindowError, match="windows 2024-01-01 of scores_v1 have no source data yet: "
                                          "source 'events' holds no rows"):
        check_source_reaches(SCORES, ["2024-01-01"], None)
