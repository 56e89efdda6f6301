"""Write Spark rows from the executors into a Delta table's own location, and describe the
written files as Delta add actions for the driver to commit in one transaction.

The rows never pass through the driver: executors write Parquet into a folder of the table named
after the run (`<table>/run-<token>/[<partition>=<value>/]part-*.parquet`), and one aggregation
over the files' hidden `_metadata` column gives each file's path, size, row count and column
statistics, one small row per file. The data size is therefore bounded by the executors'
storage, not by the driver's memory, and the driver needs no access to the executors' disks.

Files of a run that dies before its commit are in no Delta version, so readers never see them;
locally they are removed at once, on object stores `vacuum` removes them once they are older
than its retention.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

RUN_FOLDER_PREFIX = "run-"
# Hadoop settings for the write only: no `_SUCCESS` marker (no Delta reader wants it) and, on a
# local filesystem, no `.crc` checksum files, which vacuum would leave behind as hidden files.
_WRITE_OPTIONS = {
    "mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "fs.file.impl.disable.cache": "true",
}
# Column types that get min/max statistics, and how Delta writes them (as delta-rs does:
# timestamps truncated to milliseconds, NaN left out of float bounds).
_BOUNDED = (T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.StringType,
            T.DateType, T.TimestampType)
_STAT_FORMATS = {T.TimestampType: "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", T.DateType: "yyyy-MM-dd"}
_PRIMITIVE = (*_BOUNDED, T.BooleanType, T.BinaryType, T.DecimalType, T.TimestampNTZType)


@dataclass(frozen=True)
class RunFiles:
    """Where one run writes its files inside a table, and the Spark view of that place."""

    table_uri: str
    token: str

    @classmethod
    def new(cls, table_uri: str, token: str | None = None) -> "RunFiles":
        # The random part keeps the folder unique when a run id is reused by a retry.
        return cls(table_uri.rstrip("/"), f"{token + '-' if token else ''}{uuid.uuid4().hex[:12]}")

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

    def add_actions(self, spark: SparkSession, schema: T.StructType, partition_by: Sequence[str] = ()) -> list[AddAction]:
        """One Delta add action per written file with its statistics, computed by the executors;
        in file-name order (Spark's task order, which keeps a sorted output sorted)."""
        meta = F.col("_metadata")
        fields = [f for f in schema.fields if f.name not in partition_by and isinstance(f.dataType, _PRIMITIVE)]
        aggregations = [F.count(F.lit(1)).alias("__records")]
        for field in fields:
            aggregations.append(F.sum(F.col(field.name).isNull().cast("long")).alias(f"{field.name}__nulls"))
            if isinstance(field.dataType, _BOUNDED):
                aggregations += [_bound(F.min, field).alias(f"{field.name}__min"),
                                 _bound(F.max, field).alias(f"{field.name}__max")]
        grouped = self.read(spark, schema).groupBy(
            meta.file_path.alias("__path"), meta.file_size.alias("__size"),
            F.unix_millis(meta.file_modification_time).alias("__modified"), *[F.col(c) for c in partition_by],
        ).agg(*aggregations)
        actions = [self._action(row.asDict(), fields, partition_by) for row in grouped.collect()]
        return sorted(actions, key=lambda a: a.path)

    def remove(self) -> None:
        """Delete the run's files when the table is local; elsewhere vacuum does it later."""
        path = local_path(self.location)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def _action(self, row: dict, fields: list[T.StructField], partition_by: Sequence[str]) -> AddAction:
        stats: dict = {"numRecords": int(row["__records"]), "minValues": {}, "maxValues": {}, "nullCount": {}}
        for field in fields:
            stats["nullCount"][field.name] = int(row[f"{field.name}__nulls"] or 0)
            for bound in ("min", "max"):
                value = row.get(f"{field.name}__{bound}")
                if value is not None and not (isinstance(value, float) and not math.isfinite(value)):
                    stats[f"{bound}Values"][field.name] = value
        return AddAction(
            path=self._relative(row["__path"]),
            size=int(row["__size"]),
            partition_values={c: None if row[c] is None else str(row[c]) for c in partition_by},
            modification_time=int(row["__modified"]),
            data_change=True,
            stats=json.dumps(stats, separators=(",", ":")),
        )

    def _relative(self, file_path: str) -> str:
        """The file's path relative to the table, as it is named in storage (delta-rs encodes it
        for the log). Spark gives a URL-encoded URI whose scheme spelling may differ from ours
        (`file:/` vs `file:///`), so the run folder, unique by its token, marks where the
        table's part ends."""
        marker = f"/{self.folder}/"
        at = file_path.find(marker)
        if at < 0:
            raise RuntimeError(f"Spark wrote {file_path!r} outside the run folder {self.location!r}")
        return unquote(file_path[at + 1:])


def write_table(spark: SparkSession, rows: DataFrame, uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Replace the Delta table at `uri` (created when missing) with `rows`, written by the
    executors and committed in one transaction, schema included; return the new version."""
    files = RunFiles.new(uri)
    try:
        files.write(rows)
        actions = files.add_actions(spark, rows.schema)
        schema = to_arrow_schema(rows.schema, timezone="UTC")
        if DeltaTable.is_deltatable(uri, storage_options=storage_options):
            table = DeltaTable(uri, storage_options=storage_options)
        else:
            table = DeltaTable.create(uri, schema, storage_options=storage_options)
        table.create_write_transaction(actions, mode="overwrite", schema=schema,
                                       commit_properties=CommitProperties(custom_metadata={"writer": "feature-store"}))
    except BaseException:
        files.remove()
        raise
    return DeltaTable(uri, storage_options=storage_options).version()


def _bound(aggregate, field: T.StructField) -> Column:
    column = F.col(field.name)
    if isinstance(field.dataType, (T.FloatType, T.DoubleType)):
        column = F.when(~F.isnan(column), column)  # Spark orders NaN above every number
    fmt = _STAT_FORMATS.get(type(field.dataType))
    return F.date_format(aggregate(column), fmt) if fmt else aggregate(column)


def local_path(uri: str) -> str | None:
    """The folder of a local (or `file:`) URI; None for object-store URIs."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    return None if "://" in uri else uri
