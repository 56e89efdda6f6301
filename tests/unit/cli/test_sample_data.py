"""The sample data ends with the last complete day at an injected `now`, and is the same for the
same seed, sizes and end."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.cli.sample_data import SampleSize, generate_sample_data, last_complete_day, sample_end
from feature_pipelines.errors import WindowError
from feature_pipelines.stores.offline.delta_files import open_table, read_delta

UTC = timezone.utc
NOW = datetime(2026, 12, 3, 11, 34, tzinfo=UTC)


def event_times(root: Path, table: str, column: str) -> tuple[datetime, datetime]:
    times = read_delta(open_table(str(root / table)), columns=[column]).column(0)
    return pc.min(times).as_py(), pc.max(times).as_py()


def test_the_default_end_is_the_last_complete_day_at_now() -> None:
    assert last_complete_day(NOW) == date(2026, 12, 2)
    assert last_complete_day(datetime(2026, 12, 3, tzinfo=UTC)) == date(2026, 12, 2)  # 12-02 has just ended
    assert last_complete_day(datetime(2026, 12, 3, 1, tzinfo=timezone(timedelta(hours=2)))) == date(2026, 12, 1)
    assert sample_end(None, NOW) == date(2026, 12, 2)
    assert sample_end(date(2024, 2, 29), NOW) == date(2024, 2, 29)
    with pytest.raises(WindowError, match=r"^--end 2026-12-03: that day has not ended yet \(now is "
                                          r"2026-12-03T11:34:00\+00:00\); pass --end 2026-12-02 or earlier\.$"):
        sample_end(date(2026, 12, 3), NOW)


def test_the_sample_covers_its_days_up_to_its_end(tmp_path: Path) -> None:
    size = SampleSize.for_scale(2_000, end=date(2026, 12, 2), days=30)
    assert size.first_day == date(2026, 11, 3)
    generate_sample_data(str(tmp_path), size)
    first, last = event_times(tmp_path, "transactions", "event_time")
    assert datetime(2026, 11, 3, tzinfo=UTC) <= first < datetime(2026, 11, 4, tzinfo=UTC)
    assert datetime(2026, 12, 2, tzinfo=UTC) <= last < datetime(2026, 12, 3, tzinfo=UTC)
    first, last = event_times(tmp_path, "accounts", "updated_at")
    assert first >= datetime(2026, 11, 3, tzinfo=UTC) and last < datetime(2026, 12, 3, tzinfo=UTC)
    # The transactions source's event_id: pushed and streamed events are applied once per id.
    ids = read_delta(open_table(str(tmp_path / "transactions"))).column("transaction_id")
    assert len(ids) == 2_000 and ids.null_count == 0 and len(ids.unique()) == 2_000


def test_the_same_seed_and_end_give_the_same_data_and_another_end_shifts_it(tmp_path: Path) -> None:
    size = SampleSize.for_scale(500, end=date(2024, 2, 29), days=30, seed=3)
    tables = []
    later = SampleSize.for_scale(500, end=date(2024, 3, 9), days=30, seed=3)
    for name, sample in [("a", size), ("b", size), ("c", later)]:
        generate_sample_data(str(tmp_path / name), sample)
        tables.append(read_delta(open_table(str(tmp_path / name / "transactions"))).sort_by("transaction_id"))
    assert tables[0].equals(tables[1])
    shifted = pc.add(tables[0].column("event_time"), pc.cast(timedelta(days=9), "duration[us]"))
    assert tables[2].column("event_time").equals(shifted)
    assert tables[2].column("amount").equals(tables[0].column("amount"))


def test_generate_ends_yesterday_unless_end_pins_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("feature_pipelines.clock.utc_now", lambda: NOW)
    env = {"FEATURESTORE_DATA_DIR": str(tmp_path), "FEATURESTORE_SOURCE_ROOT": str(tmp_path / "sources")}
    result = CliRunner().invoke(featurestore, ["generate", "--scale", "500", "--days", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "source transactions: 500 rows, 2026-11-30..2026-12-02 ->" in result.output
    first, last = event_times(tmp_path / "sources", "transactions", "event_time")
    assert first.date() == date(2026, 11, 30) and last.date() == date(2026, 12, 2)

    pinned = CliRunner().invoke(featurestore, ["generate", "--scale", "500", "--days", "3", "--end", "2024-02-29"],
                                env=env)
    assert pinned.exit_code == 0, pinned.output
    first, last = event_times(tmp_path / "sources", "transactions", "event_time")
    assert first.date() == date(2024, 2, 27) and last.date() == date(2024, 2, 29)

    future = CliRunner().invoke(featurestore, ["generate", "--end", "2026-12-03"], env=env)
    assert future.exit_code == 1
    assert future.output.strip().splitlines() == [
        "error: --end 2026-12-03: that day has not ended yet (now is 2026-12-03T11:34:00+00:00); "
        "pass --end 2026-12-02 or earlier."]
