"""The executor write path: Spark writes Parquet into the Delta table's location and the driver
commits the file list. Its Delta statistics must equal what delta-rs writes for the same rows,
its files must be the table's only files after a commit, and a failed run must leave nothing
visible behind."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F
from pyspark.sql import types as T

from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.stores.offline.upkeep import maintain_table
from feature_pipelines.stores.offline.executor_write import RUN_FOLDER_PREFIX, RunFiles, _statistics, write_table

pytestmark = pytest.mark.integration
UTC = timezone.utc
SCHEMA = T.StructType([
    T.StructField("user_id", T.StringType()), T.StructField("ts", T.TimestampType()),
    T.StructField("amount", T.DoubleType()), T.StructField("n", T.IntegerType()),
    T.StructField("flag", T.BooleanType()), T.StructField("day", T.DateType()),
    T.StructField("window_key", T.StringType()),
])
ROWS = [  # hourly keys (':' is escaped on disk), a space in a value, NaN, nulls, sub-ms times
    ("a b", datetime(2024, 3, 1, 5, 0, 0, 123456, UTC), 1.5, 3, True, datetime(2024, 3, 1).date(), "2024-03-01-05:00"),
    ("c", datetime(2024, 3, 1, 5, 59, 59, 999999, UTC), float("nan"), None, None, None, "2024-03-01-05:00"),
    ("d", datetime(2024, 3, 1, 6, 30, tzinfo=UTC), None, -7, False, datetime(2024, 2, 29).date(), "2024-03-01-06:00"),
]


def _log_stats(table_uri: str) -> dict[str, dict]:
    """Each added file's stats as written in the JSON log, by partition value; timestamps parsed
    (delta-rs writes `06:30:00Z` where we write `06:30:00.000Z`: the same instant)."""
    found = {}
    for log in sorted(Path(table_uri, "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            action = json.loads(line).get("add")
            if action:
                stats = json.loads(action["stats"])
                for bound in ("minValues", "maxValues"):
                    if "ts" in stats[bound]:
                        stats[bound]["ts"] = pd.Timestamp(stats[bound]["ts"])
                found[action["partitionValues"]["window_key"]] = stats
    return found


def test_statistics_and_layout_equal_delta_rs(spark, tmp_path: Path) -> None:
    frame = spark.createDataFrame(ROWS, SCHEMA).repartition(1)
    arrow_schema = pa.schema([pa.field("user_id", pa.string()), pa.field("ts", pa.timestamp("us", "UTC")),
                              pa.field("amount", pa.float64()), pa.field("n", pa.int32()),
                              pa.field("flag", pa.bool_()), pa.field("day", pa.date32()),
                              pa.field("window_key", pa.string())])
    reference_uri, ours_uri = str(tmp_path / "delta_rs"), str(tmp_path / "executors")
    write_deltalake(reference_uri, pa.Table.from_pylist([dict(zip(SCHEMA.names, r)) for r in ROWS], arrow_schema),
                    partition_by=["window_key"])

    DeltaTable.create(ours_uri, arrow_schema, partition_by=["window_key"])
    files = RunFiles.new(ours_uri, "test")
    files.write(frame, ["window_key"])
    actions = files.add_actions()
    DeltaTable(ours_uri).create_write_transaction(actions, mode="append", schema=arrow_schema,
                                                  partition_by=["window_key"])

    expected = _log_stats(reference_uri)
    # Spark's Parquet writer keeps no float bounds for a row group holding NaN, so that file has
    # none for `amount` (delta-rs leaves NaN out and keeps 1.5): fewer bounds, never wrong ones.
    for bound in ("minValues", "maxValues"):
        del expected["2024-03-01-05:00"][bound]["amount"]
    assert _log_stats(ours_uri) == expected
    ours, reference = DeltaTable(ours_uri), DeltaTable(reference_uri)
    columns = SCHEMA.names
    pd.testing.assert_frame_equal(
        read_delta(ours).to_pandas()[columns].sort_values("user_id").reset_index(drop=True),
        read_delta(reference).to_pandas()[columns].sort_values("user_id").reset_index(drop=True),
    )
    # Only Parquet files in the run's folder: no _SUCCESS marker, no .crc checksums.
    written = sorted(p.relative_to(Path(ours_uri)).as_posix() for p in Path(ours_uri).rglob("*")
                     if p.is_file() and "_delta_log" not in p.parts)
    assert written and all(w.startswith(f"{RUN_FOLDER_PREFIX}test-") and w.endswith(".parquet") for w in written)
    assert sorted(a.path for a in actions) == written


def test_write_table_replaces_table_and_schema_in_one_commit(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "out")
    write_table(spark, spark.range(5).select(F.col("id").alias("a")), uri)
    ordered = spark.range(0, 1000, numPartitions=4).select(F.col("id").alias("b"), (F.col("id") * 0.5).alias("c"))
    version = write_table(spark, ordered, uri)

    table = DeltaTable(uri)
    assert table.version() == version
    assert [f.name for f in pa.schema(table.schema().to_arrow())] == ["b", "c"]
    # File order follows Spark's partition order, so a sorted output reads back sorted.
    assert read_delta(table).column("b").to_pylist() == list(range(1000))
    assert len(pa.table(table.get_add_actions(flatten=True))) == 4


def test_failed_write_leaves_table_and_removes_its_files(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "out")
    write_table(spark, spark.range(3).select(F.col("id").alias("a")), uri)
    # One task of three fails; the others have written their files by then.
    failing = spark.range(0, 3, 1, 3).select(
        F.col("id").alias("a"), F.when(F.col("id") == 2, F.raise_error(F.lit("boom"))).otherwise(F.lit("ok")).alias("z"))
    with pytest.raises(Exception, match="boom"):
        write_table(spark, failing, uri)

    table = DeltaTable(uri)
    assert table.version() == 1
    assert read_delta(table).column("a").to_pylist() == [0, 1, 2]
    referenced = {path.split("/")[0] for path in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()}
    on_disk = {p.name for p in Path(uri).iterdir() if p.name.startswith(RUN_FOLDER_PREFIX)}
    assert on_disk == referenced and len(on_disk) == 1


def test_upkeep_vacuums_replaced_files_and_their_empty_run_folders(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "out")
    write_table(spark, spark.range(0, 10, 1, 2).select(F.col("id").alias("a")), uri)
    write_table(spark, spark.range(0, 20, 1, 2).select(F.col("id").alias("a")), uri)
    assert len([p for p in Path(uri).iterdir() if p.name.startswith(RUN_FOLDER_PREFIX)]) == 2

    maintain_table(uri, retention_hours=0)

    table = DeltaTable(uri)
    assert sorted(read_delta(table).column("a").to_pylist()) == list(range(20))
    referenced = {path.split("/")[0] for path in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()}
    on_disk = {p.name for p in Path(uri).iterdir() if p.name.startswith(RUN_FOLDER_PREFIX)}
    assert on_disk == referenced & on_disk  # no run folder is left without a referenced file
    assert all(any(f.is_file() for f in (Path(uri) / name).rglob("*")) for name in on_disk)
    assert len(on_disk) <= 1


def test_statistics_skip_nested_columns_and_keep_the_ones_after_them(tmp_path: Path) -> None:
    table = pa.table({"s": pa.array([{"x": 1, "y": "a"}, None]), "l": pa.array([[1, 2], [3]]),
                      "b": pa.array([7, None]), "c": pa.array(["z", "q"])})
    pq.write_table(table, tmp_path / "f.parquet")
    assert _statistics(pq.read_metadata(tmp_path / "f.parquet")) == {
        "numRecords": 2, "minValues": {"b": 7, "c": "q"}, "maxValues": {"b": 7, "c": "z"},
        "nullCount": {"b": 1, "c": 0},
    }
