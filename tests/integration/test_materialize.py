"""Materializing windows with real Spark, Delta and Redis: ranges, idempotence, isolation, failures."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F

from feature_pipelines import FeatureSet, Partitions, Source
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.errors import SourceError, TransformOutputError
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.stores.publish import publish_windows
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.offline.window_log import WindowLog
from feature_pipelines.planning.windows import windows_between
from tests.factories import feature_set, source
from tests.helpers import PROJECT_DIR, offline_frame, write_source

pytestmark = pytest.mark.integration
UTC = timezone.utc
CATALOG = load_catalog(PROJECT_DIR / "feature_defs")


def keys(spec: FeatureSet, first: str, last: str) -> list[str]:
    return [w.key for w in windows_between(spec, first, last)]


@pytest.fixture()
def sample_stores(stores: Stores, sample_sources: str) -> Stores:
    return replace(stores, source_root=sample_sources)


@pytest.mark.parametrize("name", ["transactions", "merchants", "accounts"])
def test_range_run_equals_single_window_runs(spark, sample_stores: Stores, tmp_path: Path, name: str) -> None:
    spec = CATALOG.get(name)
    window_keys = keys(spec, "2024-01-08", "2024-01-12")
    ranged = materialize_windows(spark, spec, window_keys, sample_stores)
    assert ranged.table_version == 2 and ranged.rows > 0  # after create + pin: one commit for the range

    singles = replace(sample_stores, offline=DeltaOfflineStore(str(tmp_path / "singles")), online=None)
    for key in window_keys:
        materialize_windows(spark, spec, [key], singles)
    assert DeltaTable(singles.offline.table_uri(spec)).version() == len(window_keys) + 1  # create, pin, one per run
    # Exactly equal, floats included: running totals are exact, so the run boundaries do not matter.
    pd.testing.assert_frame_equal(
        offline_frame(sample_stores.offline, spec), offline_frame(singles.offline, spec), check_exact=True
    )
    assert sorted(ranged.rows_per_window) == window_keys


def test_rerun_is_idempotent_and_replaces_only_its_window(spark, sample_stores: Stores) -> None:
    spec = CATALOG.get("transactions")
    materialize_windows(spark, spec, keys(spec, "2024-01-08", "2024-01-12"), sample_stores)
    before = sample_stores.offline.open(spec).read().to_pandas()

    result = materialize_windows(spark, spec, ["2024-01-10"], sample_stores)
    assert result.table_version == 3
    after = sample_stores.offline.open(spec).read().to_pandas()

    def without_created(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns="created").sort_values(["account_id", "ts"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(without_created(before), without_created(after))
    # Other windows are the very same rows (same materialization time); the re-run window is new.
    others_before = before[before.window_key != "2024-01-10"].sort_values(["account_id", "ts"]).reset_index(drop=True)
    others_after = after[after.window_key != "2024-01-10"].sort_values(["account_id", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(others_before, others_after)
    rerun = after[after.window_key == "2024-01-10"]
    assert len(rerun) > 0 and (rerun.created > before.created.max()).all()
    assert sample_stores.offline.open(spec).window_keys() == keys(spec, "2024-01-08", "2024-01-12")


def _everything_read(events, window):
    """One row per user at the window's start summing every source row the transform is given."""
    return (events.groupBy("user_id").agg(F.count(F.lit(1)).alias("n_read"), F.sum("x").alias("x_read"))
            .withColumn("ts", F.lit(window.start)))


@pytest.mark.parametrize("layout", ["one file", "file per row"])
def test_run_reads_exactly_its_source_range(spark, stores: Stores, layout: str) -> None:
    """Window 2024-03-05 with source_lookback 2d reads event times in [2024-03-03, 2024-03-06):
    a row one microsecond older than the bound, or at the end, cannot change its rows; a row
    exactly at the bound does. In one file the rows are cut by time; one file per row also
    checks that files are skipped by their statistics without losing the one at the bound."""
    spec = feature_set("read_range", features={"n_read": "int64", "x_read": "float64"},
                       source_=source(columns={"user_id": "string", "x": "float64"}), transform=_everything_read,
                       start="2024-03-01", source_lookback="2d")
    bound, end = pd.Timestamp("2024-03-03", tz="UTC"), pd.Timestamp("2024-03-06", tz="UTC")
    one_us = pd.Timedelta(microseconds=1)
    # x are powers of ten: their sum names the rows that were read.
    events = pd.DataFrame({"user_id": ["u1"] * 5, "x": [1000.0, 100.0, 10.0, 1.0, 10000.0],
                           "event_time": [bound - one_us, bound, bound + pd.Timedelta(days=2, hours=1), end - one_us, end]})
    if layout == "one file":
        write_source(stores.source_root, "events", events)
    else:
        for i in range(len(events)):
            write_deltalake(f"{stores.source_root}/events", events.iloc[[i]], mode="append")
    materialize_windows(spark, spec, ["2024-03-05"], stores)
    rows = offline_frame(stores.offline, spec)
    assert rows[["user_id", "n_read", "x_read"]].to_dict("records") == [{"user_id": "u1", "n_read": 3, "x_read": 111.0}]


def publish(spec, window_keys: list[str], stores: Stores):
    return publish_windows(spec, window_keys, stores.offline, stores.online)


def test_older_window_never_overwrites_newer_online_value(spark, sample_stores: Stores) -> None:
    spec = CATALOG.get("transactions")
    materialize_windows(spark, spec, ["2024-01-20"], sample_stores)
    publish(spec, ["2024-01-20"], sample_stores)
    account_ids = sample_stores.offline.open(spec).read().column("account_id").unique().to_pylist()
    latest = sample_stores.online.read(spec, [[a] for a in account_ids])
    assert all(v is not None and v.ts >= datetime(2024, 1, 20, tzinfo=UTC) for v in latest)

    older = keys(spec, "2024-01-05", "2024-01-10")
    materialize_windows(spark, spec, older, sample_stores)
    backfill = publish(spec, older, sample_stores)
    assert backfill.kept_newer > 0
    again = sample_stores.online.read(spec, [[a] for a in account_ids])
    assert again == latest

    # Re-publishing the newest window may correct values: equal ts replaces.
    materialize_windows(spark, spec, ["2024-01-20"], sample_stores)
    rerun = publish(spec, ["2024-01-20"], sample_stores)
    assert rerun.written == len(account_ids)


_FAILURE = {"mode": ""}  # how `_flaky_transform` fails; the code (and so the definition) never changes


def _explodes(value):
    raise RuntimeError("bad value in executor")


def _flaky_transform(events, window):
    if _FAILURE["mode"] == "python":
        raise ValueError("upstream feed is corrupt")
    rows = CATALOG.get("merchants").transform(events, window)
    if _FAILURE["mode"] == "spark":
        rows = rows.withColumn("amount_sum_1d", F.udf(_explodes, "double")(F.col("amount_sum_1d")))
    return rows


def test_transform_failure_leaves_table_at_previous_version(spark, sample_stores: Stores) -> None:
    spec = replace(CATALOG.get("merchants"), name="merchants_fail", transform=_flaky_transform)
    materialize_windows(spark, spec, keys(spec, "2024-01-08", "2024-01-09"), sample_stores)
    before = sample_stores.offline.open(spec).read().to_pandas()
    try:
        for mode, message in [("python", "upstream feed is corrupt"), ("spark", "computing the windows failed")]:
            _FAILURE["mode"] = mode
            with pytest.raises(TransformOutputError, match=message):
                materialize_windows(spark, spec, keys(spec, "2024-01-08", "2024-01-10"), sample_stores)
            assert DeltaTable(sample_stores.offline.table_uri(spec)).version() == 2
            pd.testing.assert_frame_equal(sample_stores.offline.open(spec).read().to_pandas(), before)
    finally:
        _FAILURE["mode"] = ""


def test_failure_after_the_commit_keeps_the_committed_files(
        spark, sample_stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window-log append comes after the data commit; if it fails, the files the new table
    version references must stay (the run's cleanup covers only what was never committed)."""
    spec = CATALOG.get("merchants")
    window_keys = keys(spec, "2024-01-08", "2024-01-09")

    def log_fails(*args, **kwargs) -> None:
        raise OSError("window log unreachable")

    monkeypatch.setattr(WindowLog, "sync", log_fails)
    with pytest.raises(OSError, match="window log unreachable"):
        materialize_windows(spark, spec, window_keys, sample_stores)
    monkeypatch.undo()

    assert DeltaTable(sample_stores.offline.table_uri(spec)).version() == 2  # the data commit happened
    committed = sample_stores.offline.open(spec).read().to_pandas()  # every referenced file is still there
    assert len(committed) > 0 and sorted(committed["window_key"].unique()) == window_keys
    assert sorted(sample_stores.offline.materialized_windows(spec)) == window_keys  # logged from the commit


# --- bad input -----------------------------------------------------------------------------------

EVENTS_SOURCE = source(columns={"user_id": "string", "score": "float64"})


def passthrough(source_: Source = EVENTS_SOURCE) -> FeatureSet:
    return feature_set(features={"score": "float64"}, source_=source_, start="2024-03-01")


def events(**columns) -> pd.DataFrame:
    base = {
        "user_id": ["u1", "u2", "u3"],
        "score": [0.5, 0.7, 0.9],
        "event_time": pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00", "2024-03-01 03:00"], utc=True),
    }
    base.update(columns)
    return pd.DataFrame(base)


def assert_nothing_written(stores: Stores, spec: FeatureSet) -> None:
    assert not stores.offline.exists(spec)
    assert stores.online.count(spec) == 0


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (events(score=["high", "low", "mid"]), SourceError, "column 'score' has type 'string' but is declared 'float64'"),
        (events().drop(columns="score"), SourceError, "column 'score' is missing"),
        (events(user_id=["u1", None, "u3"]), TransformOutputError, "null key or timestamp, e.g. user_id=None"),
        (events(user_id=["u1", "u1", "u3"], event_time=pd.to_datetime(["2024-03-01 01:00"] * 2 + ["2024-03-01 03:00"], utc=True)),
         TransformOutputError, "not unique on \\(user_id, ts\\); duplicated keys, e.g. user_id='u1'"),
        (events(event_time=pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00", "2024-03-01 03:00"])),
         SourceError, "column 'event_time' holds naive timestamps"),
    ],
)
def test_bad_source_is_rejected_and_nothing_written(spark, stores: Stores, frame, error, message) -> None:
    write_source(stores.source_root, "events", frame)
    spec = passthrough()
    with pytest.raises(error, match=message):
        materialize_windows(spark, spec, ["2024-03-01"], stores)
    assert_nothing_written(stores, spec)


def test_missing_source_names_path(spark, stores: Stores) -> None:
    with pytest.raises(SourceError, match="source 'events': no Delta table at .*/sources/events"):
        materialize_windows(spark, passthrough(), ["2024-03-01"], stores)


def test_naive_timestamps_accepted_with_declared_timezone(spark, stores: Stores) -> None:
    naive = pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00", "2024-03-02 00:30"])
    write_source(stores.source_root, "events", events(event_time=naive))
    spec = passthrough(replace(EVENTS_SOURCE, timezone="Europe/Berlin"))
    materialize_windows(spark, spec, ["2024-03-01"], stores)
    rows = offline_frame(stores.offline, spec)
    # Berlin is UTC+1 in March: 01:00 local is 00:00 UTC; 00:30 on the 2nd is 23:30 UTC on the 1st.
    assert rows.ts.tolist() == [
        pd.Timestamp("2024-03-01 00:00", tz="UTC"),
        pd.Timestamp("2024-03-01 01:00", tz="UTC"),
        pd.Timestamp("2024-03-01 23:30", tz="UTC"),
    ]


def test_transform_rows_outside_window_are_rejected(spark, stores: Stores) -> None:
    write_source(stores.source_root, "events", events())
    spec = replace(
        passthrough(),
        transform=lambda df, window: df.select("user_id", "score", (F.col("event_time") + F.expr("INTERVAL 1 DAY")).alias("ts")),
    )
    with pytest.raises(TransformOutputError, match=r"ts outside the windows being materialized \(\[2024-03-01T00:00:00\+00:00"):
        materialize_windows(spark, spec, ["2024-03-01"], stores)
    assert_nothing_written(stores, spec)


def test_transform_output_with_wrong_type_is_rejected(spark, stores: Stores) -> None:
    write_source(stores.source_root, "events", events())
    spec = replace(
        passthrough(),
        transform=lambda df, window: df.select("user_id", F.col("score").cast("string").alias("score"), F.col("event_time").alias("ts")),
    )
    with pytest.raises(TransformOutputError, match="output column 'score' has type 'string' but the spec declares 'float64'"):
        materialize_windows(spark, spec, ["2024-03-01"], stores)
    assert_nothing_written(stores, spec)


def test_empty_window_replaces_old_rows(spark, stores: Stores) -> None:
    """A window whose source rows disappeared is emptied, not left stale."""
    write_source(stores.source_root, "events", events())
    spec = passthrough()
    materialize_windows(spark, spec, ["2024-03-01", "2024-03-02"], stores)
    assert len(stores.offline.open(spec).read()) == 3
    # 03-01's rows are gone from the source; it only holds a later event now.
    write_source(stores.source_root, "events", events(user_id=["u9"], score=[0.1],
                                                      event_time=pd.to_datetime(["2024-03-05 01:00"], utc=True)))
    result = materialize_windows(spark, spec, ["2024-03-01"], stores)
    assert result.rows == 0 and len(stores.offline.open(spec).read()) == 0


def test_hourly_windows_use_dagster_hourly_keys(spark, stores: Stores) -> None:
    times = pd.to_datetime(["2024-03-01 04:59:59", "2024-03-01 05:00:00", "2024-03-01 06:30:00", "2024-03-01 07:00:00"], utc=True)
    write_source(stores.source_root, "events", events(user_id=["u1"] * 4, score=[1.0, 2.0, 3.0, 4.0], event_time=times))
    spec = replace(passthrough(), partitions=Partitions("hourly", start="2024-03-01"))
    result = materialize_windows(spark, spec, keys(spec, "2024-03-01-05:00", "2024-03-01-06:00"), stores)
    assert result.rows_per_window == {"2024-03-01-05:00": 1, "2024-03-01-06:00": 1}
    assert stores.offline.open(spec).window_keys() == ["2024-03-01-05:00", "2024-03-01-06:00"]
    publish(spec, result.window_keys, stores)
    # Online holds the newest row of the run, not the 07:00 row of a window not materialized.
    assert stores.online.read(spec, [["u1"]])[0].features == {"score": 3.0}


def test_window_log_records_empty_windows(spark, stores: Stores) -> None:
    write_source(stores.source_root, "events", events())
    spec = passthrough()
    materialize_windows(spark, spec, ["2024-03-01", "2024-03-02"], stores)
    log = stores.offline.materialized_windows(spec)
    assert {k: v["rows"] for k, v in log.items()} == {"2024-03-01": 3, "2024-03-02": 0}
    assert stores.offline.open(spec).window_keys() == ["2024-03-01"]  # only windows holding rows have files
