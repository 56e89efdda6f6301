"""How far behind `describe` says a feature set is: windows without source data do not count."""

from __future__ import annotations

from datetime import datetime, timezone

from feature_pipelines.cli.catalog_view import freshness_lag
from feature_pipelines.planning.window_status import WindowStatus

WRITTEN = datetime(2024, 2, 1, tzinfo=timezone.utc)


def statuses(*pairs: str) -> list[WindowStatus]:
    """`("2024-01-01", "missing"), ...` as statuses; materialized and stale windows are logged."""
    return [WindowStatus(key, status, 1 if status in ("materialized", "stale") else None,
                         WRITTEN if status in ("materialized", "stale") else None, None)
            for key, status in pairs]


def test_windows_without_source_data_are_not_behind() -> None:
    assert freshness_lag(statuses(("2024-01-01", "no source data"), ("2024-01-02", "materialized"),
                                  ("2024-01-03", "materialized"))) == \
        "up to date (last complete window 2024-01-03 is materialized)"
    assert freshness_lag(statuses(("2024-01-01", "materialized"), ("2024-01-02", "stale"),
                                  ("2024-01-03", "no source data"), ("2024-01-04", "no source data"))) == \
        "up to date with the source (its newest window with data, 2024-01-02, is materialized)"


def test_missing_and_failed_windows_after_the_newest_materialized_one_are_behind() -> None:
    assert freshness_lag(statuses(("2024-01-01", "missing"), ("2024-01-02", "materialized"), ("2024-01-03", "missing"),
                                  ("2024-01-04", "failed"), ("2024-01-05", "in progress"),
                                  ("2024-01-06", "no source data"))) == \
        "2 window(s) behind: newest materialized 2024-01-02, the source has data up to 2024-01-05"
    assert freshness_lag(statuses(("2024-01-01", "no source data"), ("2024-01-02", "missing"))) == \
        "never materialized; the source has data up to window 2024-01-02"
    assert freshness_lag(statuses(("2024-01-01", "no source data"))) == \
        "the source has no data for any complete window yet (last complete 2024-01-01)"
    assert freshness_lag([]) == "no complete window yet"


def test_quarantined_windows_are_behind_not_materialized() -> None:
    held = [WindowStatus("2024-01-03", "quarantined", 5, WRITTEN, "r", ("row_count_in_band",))]
    assert freshness_lag(statuses(("2024-01-01", "materialized"), ("2024-01-02", "materialized")) + held) == \
        "1 window(s) behind: newest materialized 2024-01-02, the source has data up to 2024-01-03"
    assert freshness_lag(statuses(("2024-01-01", "missing"), ("2024-01-02", "no source data")) + held) == \
        "every materialized window is quarantined; the source has data up to window 2024-01-03"


def test_describe_and_the_asset_metadata_say_which_sets_stream() -> None:
    """The example transactions set streams; accounts does not."""
    from dagster import AssetKey

    from feature_pipelines.cli.catalog_view import describe, render
    from feature_pipelines.orchestration.metadata import definition_metadata
    from feature_pipelines.spec.catalog import load_catalog
    from tests.helpers import PROJECT_DIR

    catalog = load_catalog(PROJECT_DIR / "feature_defs")
    streamed, batch = catalog.get("transactions"), catalog.get("accounts")
    assert "  stores:          offline on, online on, streamed (events of source transactions, id transaction_id); " \
           "schedule off" in render(describe(streamed, catalog, [], None, []))
    assert "  stores:          offline on, online on; schedule" in render(describe(batch, catalog, [], None, []))
    assert definition_metadata(streamed, None, "/t", AssetKey("src"))["stores"] == "offline, online, streamed"
    assert definition_metadata(batch, None, "/t", AssetKey("src"))["stores"] == "offline, online"
