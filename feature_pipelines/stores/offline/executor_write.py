"""Write Spark rows from the executors into a Delta table's own location, and describe the
written files as Delta add actions for the driver to commit in one transaction.

The rows never pass through the driver: executors write Parquet into a folder of the table named
after the run (`<table>/run-<token>/[<partition>=<value>/]part-*.parquet`); the driver then lists
that folder and reads each file's Parquet footer (a few KB: row count and per-column min, max and
null count, which the writer already computed) to build the Delta statistics. The data size is
bounded by the executors' storage, not by the driver's memory, and no second Spark job reads
the rows again.

Files of a run that dies before its commit are in no Delta version, so readers never see them;
`RunFiles.remove` deletes them at once on a local disk (for a failure before the commit), and
`vacuum` removes any left (object stores, killed runs, failed commits) once older than its
retention.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from urllib.parse import unquote

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from feature_pipelines.stores.offline.delta_files import find_table, local_path

RUN_FOLDER_PREFIX = "run-"
# Hadoop settings for the write only: no `_SUCCESS` marker (no Delta reader wants it) and, on a
# local filesystem, no `.crc` checksum files, which vacuum would leave behind as hidden files.
_WRITE_OPTIONS = {
    "mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "fs.file.impl.disable.cache": "true",
}
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_FOOTER_READERS = 16  # footers are tiny: on an object store their latency, not size, counts


@dataclass(frozen=True)
class RunFiles:
    """Where one run writes its files inside a table, and how the driver sees them."""

    table_uri: str
    token: str
    storage_options: dict[str, str] | None = None

    @classmethod
    def new(cls, table_uri: str, token: str | None = None, storage_options: dict[str, str] | None = None) -> "RunFiles":
        # The random part keeps the folder unique when a run id is reused by a retry.
        return cls(table_uri.rstrip("/"), f"{token + '-' if token else ''}{uuid.uuid4().hex[:12]}", storage_options)

    @property
    def folder(self) -> str:
        return f"{RUN_FOLDER_PREFIX}{self.token}"

    @property
    def location(self) -> str:
        return f"{self.table_uri}/{self.folder}"

    def write(self, rows: DataFrame, partition_by: Sequence[str] = ()) -> None:
        """Write `rows` from the executors, one folder per value of the partition columns."""
        writer = rows.write.mode("error")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        for key, value in _WRITE_OPTIONS.items():
            writer = writer.option(key, value)
        writer.parquet(self.location)

    def read(self, spark: SparkSession, schema: T.StructType) -> DataFrame:
        """The written rows; an explicit schema keeps partition values as declared (a window key
        stays a string, never an inferred date)."""
        return spark.read.schema(schema).option("basePath", self.location).parquet(self.location)

    def add_actions(self) -> list[AddAction]:
        """One Delta add action per written file, with statistics from its footer; in file-name
        order (Spark's task order, which keeps a sorted output sorted)."""
        filesystem, base = self._filesystem()
        files = sorted(
            (info for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
             if info.is_file and info.path.endswith(".parquet")),
            key=lambda info: info.path,
        )
        with ThreadPoolExecutor(max_workers=_FOOTER_READERS) as pool:
            footers = list(pool.map(lambda info: pq.read_metadata(filesystem.open_input_file(info.path)), files))
        now = int(time.time() * 1000)
        actions = []
        for info, footer in zip(files, footers):
            relative = info.path[len(base):].lstrip("/")
            actions.append(AddAction(
                path=f"{self.folder}/{relative}",
                size=info.size,
                partition_values=dict(_partition_values(relative)),
                modification_time=int(info.mtime.timestamp() * 1000) if info.mtime else now,
                data_change=True,
                stats=json.dumps(_statistics(footer), separators=(",", ":")),
            ))
        return actions

    def remove(self) -> None:
        """Delete the run's files when the table is local; elsewhere vacuum does it later."""
        path = local_path(self.location)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        # Local folders through pyarrow's own filesystem: deltalake's Python one makes the
        # interpreter abort at exit now and then (see delta_files.delta_dataset).
        path = local_path(self.location)
        if path is not None:
            return pafs.LocalFileSystem(), path
        return pafs.PyFileSystem(DeltaStorageHandler(self.location, self.storage_options)), ""


def write_table(spark: SparkSession, rows: DataFrame, uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Replace the Delta table at `uri` (created when missing) with `rows`, written by the
    executors and committed in one transaction, schema included; return the new version."""
    files = RunFiles.new(uri, storage_options=storage_options)
    try:
        files.write(rows)
        actions = files.add_actions()
        schema = to_arrow_schema(rows.schema, timezone="UTC")
        table = find_table(uri, storage_options)
        if table is None:
            table = DeltaTable.create(uri, schema, storage_options=storage_options)
        table.create_write_transaction(actions, mode="overwrite", schema=schema,
                                       commit_properties=CommitProperties(custom_metadata={"writer": "feature-store"}))
    except BaseException:
        files.remove()
        raise
    table.update_incremental()  # to the commit just made (a file commit does not move the object)
    return table.version()


def _partition_values(relative: str) -> Iterator[tuple[str, str | None]]:
    """`window_key=2024-03-01-05%3A00/part-0.parquet` -> ("window_key", "2024-03-01-05:00"):
    Spark escapes partition values in folder names as Hive does (%XX)."""
    for segment in relative.split("/")[:-1]:
        name, _, value = segment.partition("=")
        value = unquote(value)
        yield unquote(name), None if value == _HIVE_NULL else value


def _statistics(footer: pq.FileMetaData) -> dict:
    """Delta file statistics from the row groups' Parquet statistics: numRecords, and per
    top-level column nullCount and (when every row group has them) minValues / maxValues,
    written as delta-rs writes them (timestamps in UTC to the millisecond, NaN left out)."""
    stats: dict = {"numRecords": footer.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for index in range(footer.num_columns):  # Parquet's leaf columns
        name = footer.schema.column(index).path
        if "." in name:  # a leaf of a nested column: no Delta stats here
            continue
        columns = [footer.row_group(g).column(index).statistics for g in range(footer.num_row_groups)]
        if not columns or any(c is None for c in columns):
            continue
        if all(c.has_null_count for c in columns):
            stats["nullCount"][name] = sum(c.null_count for c in columns)
        bounded = [c for c in columns if c.has_min_max]
        if not bounded:
            continue
        lows, highs = [_json_value(c.min) for c in bounded], [_json_value(c.max) for c in bounded]
        if None not in lows and None not in highs:
            stats["minValues"][name], stats["maxValues"][name] = min(lows), max(highs)
    return stats


def _json_value(value: object) -> object:
    """A statistic as Delta's JSON holds it; None when it has no such form (bytes, NaN)."""
    if isinstance(value, datetime):  # a naive one is a timestamp_ntz: no zone suffix
        utc = value.astimezone(timezone.utc) if value.tzinfo else value
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}" + ("Z" if value.tzinfo else "")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return None
