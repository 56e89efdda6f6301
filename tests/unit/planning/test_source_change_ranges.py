"""The windows a source change affects, as ranges: from file statistics, and from a Delta log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from feature_pipelines import FeatureSet
from feature_pipelines.errors import SourceError
from feature_pipelines.planning.source_changes import SourceFile, affected_ranges, source_changes
from tests.factories import feature_set

UTC = timezone.utc
NOW = datetime(2024, 2, 1, tzinfo=UTC)


def scores(lookback: str = "0") -> FeatureSet:
    return feature_set(source_lookback=lookback)


def file(earliest: datetime | None, latest: datetime | None, path: str = "part.parquet") -> SourceFile:
    return SourceFile(path, NOW, earliest, latest)


def spans(ranges) -> list[tuple[str, str]]:
    return [(r.keys[0], r.keys[-1]) for r in ranges]


def test_each_file_touches_the_windows_of_its_events() -> None:
    files = [file(datetime(2024, 1, 5, 10, tzinfo=UTC), datetime(2024, 1, 5, 23, tzinfo=UTC)),
             file(datetime(2024, 1, 20, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC))]
    assert spans(affected_ranges(scores(), files, NOW)) == [("2024-01-05", "2024-01-05"), ("2024-01-20", "2024-01-20")]


def test_the_lookback_reaches_later_windows_and_joins_ranges() -> None:
    files = [file(datetime(2024, 1, 5, 10, tzinfo=UTC), datetime(2024, 1, 5, 10, tzinfo=UTC)),
             file(datetime(2024, 1, 8, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC))]
    assert spans(affected_ranges(scores("2d"), files, NOW)) == [("2024-01-05", "2024-01-10")]


def test_open_windows_are_left_out_and_a_file_without_statistics_touches_every_complete_window() -> None:
    late = [file(datetime(2024, 1, 31, 12, tzinfo=UTC), datetime(2024, 1, 31, 12, tzinfo=UTC))]
    assert spans(affected_ranges(scores("1d"), late, NOW)) == [("2024-01-31", "2024-01-31")]  # 02-01 is open
    assert spans(affected_ranges(scores(), [file(None, None)], NOW)) == [("2024-01-01", "2024-01-31")]
    assert affected_ranges(scores(), [], NOW) == []


def _append(path: Path, times: list[datetime]) -> None:
    table = pa.table({"user_id": [f"u{i}" for i in range(len(times))], "x": [1.0] * len(times),
                      "event_time": pa.array(times, pa.timestamp("us", tz="UTC"))})
    write_deltalake(str(path), table, mode="append")


def test_source_changes_diff_the_delta_log_against_the_version_seen(tmp_path: Path) -> None:
    feature_set = scores()
    _append(tmp_path / "events", [datetime(2024, 1, 2, 3, tzinfo=UTC), datetime(2024, 1, 3, 4, tzinfo=UTC)])
    first = source_changes(feature_set, str(tmp_path), None, None, NOW)
    assert (first.version, first.ranges) == (0, [])  # never looked: nothing to request
    _append(tmp_path / "events", [datetime(2024, 1, 9, 1, tzinfo=UTC), datetime(2024, 1, 10, 2, tzinfo=UTC)])
    changed = source_changes(feature_set, str(tmp_path), None, 0, NOW)
    # Only the added file counts: 01-02 and 01-03 are not requested again.
    assert changed.version == 1 and spans(changed.ranges) == [("2024-01-09", "2024-01-10")]
    assert source_changes(feature_set, str(tmp_path), None, 1, NOW + timedelta(days=1)).ranges == []
    with pytest.raises(SourceError, match="no Delta table"):
        source_changes(feature_set, str(tmp_path / "elsewhere"), None, 0, NOW)
