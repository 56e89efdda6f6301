"""Planning: window keys, ranges and the source range a run reads."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from feature_pipelines import FeatureSet
from feature_pipelines.errors import WindowError
from feature_pipelines.planning.windows import contiguous_ranges, source_range, window_for_key, windows_between
from tests.factories import feature_set, source

UTC = timezone.utc
SOURCE = source("s", {"k": "string", "v": "float64"}, timestamp="t")


def spec(cadence: str = "daily", lookback: str = "2d") -> FeatureSet:
    return feature_set("f", keys={"k": "string"}, features={"v": "float64"}, source_=SOURCE, cadence=cadence,
                       source_lookback=lookback)


def test_daily_window_is_half_open_utc_day() -> None:
    window = window_for_key(spec(), "2024-01-03")
    assert (window.start, window.end) == (datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC))


def test_hourly_keys_match_dagster_format() -> None:
    windows = windows_between(spec("hourly"), "2024-01-01-22:00", "2024-01-02-01:00")
    assert [w.key for w in windows] == ["2024-01-01-22:00", "2024-01-01-23:00", "2024-01-02-00:00", "2024-01-02-01:00"]


def test_ranges_group_adjacent_windows_and_read_lookback() -> None:
    fs = spec()
    windows = [window_for_key(fs, k) for k in ["2024-01-05", "2024-01-02", "2024-01-03", "2024-01-07"]]
    ranges = contiguous_ranges(windows)
    assert [r.keys for r in ranges] == [("2024-01-02", "2024-01-03"), ("2024-01-05",), ("2024-01-07",)]
    assert source_range(fs, ranges[0]) == (datetime(2023, 12, 31, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC))


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2024-01-05", "2024-01-02", "range end '2024-01-02' is before its start '2024-01-05'"),
        ("2024/01/05", "2024-01-06", "window key '2024/01/05' is not a daily key; write it like '2024-01-01'"),
        ("2023-12-01", "2024-01-06", "before the first window '2024-01-01'"),
    ],
)
def test_bad_ranges_are_rejected(first: str, last: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        windows_between(spec(), first, last)
