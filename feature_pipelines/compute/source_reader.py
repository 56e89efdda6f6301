"""Read exactly the source rows a run needs, as a Spark DataFrame, after checking the schema.

Delta sources are resolved with delta-rs (the transaction log, file statistics), and Spark
reads only the Parquet files whose event-time range overlaps the requested range. Spark
therefore needs no Delta jars, and the executors read the data in parallel.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from feature_pipelines.compute.source_schema import check_columns, open_checked_source
from feature_pipelines.stores.offline.delta_files import data_files
from feature_pipelines.spec.dtypes import dtype_of_spark, spark_type
from feature_pipelines.errors import SourceError, inline
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.feature_set import Source

def read_source(
    spark: SparkSession,
    source: Source,
    root: str,
    start: datetime,
    end: datetime,
    storage_options: dict[str, str] | None = None,
) -> DataFrame:
    """Source rows with event time in `[start, end)`, with the declared columns and UTC timestamps."""
    uri = resolve_path(root, source.path)
    if source.format == "delta":
        frame = _read_delta(spark, source, uri, start, end, storage_options)
    else:
        frame = _read_parquet(spark, source, uri)
    frame = _conform(source, uri, frame)
    ts = F.col(source.timestamp)
    return frame.where((ts >= F.lit(start)) & (ts < F.lit(end)))


def _read_delta(
    spark: SparkSession,
    source: Source,
    uri: str,
    start: datetime,
    end: datetime,
    storage_options: dict[str, str] | None,
) -> DataFrame:
    checked = open_checked_source(source, uri, storage_options)
    # Naive statistics are local times in an unknown zone: widen by a day rather than miss a file.
    slack = timedelta(days=1) if source.timezone else timedelta(0)
    files = data_files(checked.table, stats_column=source.timestamp, start=start, end=end, slack=slack,
                       actions=checked.actions)
    if not files:
        return spark.createDataFrame([], _declared_schema(source, naive=checked.naive_timestamp))
    reader = spark.read
    if checked.table.metadata().partition_columns:
        reader = reader.option("basePath", uri)
    return reader.parquet(*files)


def _read_parquet(spark: SparkSession, source: Source, uri: str) -> DataFrame:
    try:
        return spark.read.parquet(uri)
    except Exception as exc:  # Spark raises AnalysisException for a missing path
        raise SourceError(f"source {source.name!r}: cannot read Parquet at {uri} ({inline(exc)}); check Source.path.") from exc


def _declared_schema(source: Source, naive: bool = False) -> T.StructType:
    fields = []
    for name, dtype in source.columns.items():
        data_type = T.TimestampNTZType() if (naive and name == source.timestamp) else spark_type(dtype)
        fields.append(T.StructField(name, data_type, True))
    return T.StructType(fields)


def _conform(source: Source, uri: str, frame: DataFrame) -> DataFrame:
    """Select the declared columns, widen types, and turn a declared-zone timestamp into UTC."""
    actual = {f.name: (dtype_of_spark(f.dataType) or f.dataType.simpleString()) for f in frame.schema.fields}
    check_columns(source, uri, actual)
    columns = []
    for name, dtype in source.columns.items():
        column = F.col(name)
        if actual[name] == "timestamp_ntz":
            # Reinterpret the wall-clock value in the declared zone, then express it in UTC.
            column = F.to_utc_timestamp(column.cast("timestamp"), source.timezone)
        elif actual[name] != dtype:
            column = column.cast(spark_type(dtype))
        columns.append(column.alias(name))
    return frame.select(*columns)
