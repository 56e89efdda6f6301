"""Read exactly the source rows a run needs, as a Spark DataFrame, after checking the schema.

Delta sources are resolved with delta-rs (the transaction log, file statistics), and Spark
reads only the Parquet files whose event-time range overlaps the requested range. Spark
therefore needs no Delta jars, and the executors read the data in parallel.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from feature_pipelines.stores.offline.delta_files import UNSUPPORTED_READER_FEATURES, data_files, find_table
from feature_pipelines.spec.dtypes import can_widen, dtype_of_spark, spark_type
from feature_pipelines.errors import SourceError
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
    table = find_table(uri, storage_options)
    if table is None:
        raise SourceError(
            f"source {source.name!r}: no Delta table at {uri}; check Source.path and the source root "
            "(FEATURESTORE_SOURCE_ROOT), or generate the sample data with `featurestore generate`."
        )
    unsupported = set(table.protocol().reader_features or []) & UNSUPPORTED_READER_FEATURES
    if unsupported:
        raise SourceError(
            f"source {source.name!r}: Delta table {uri} uses reader features {sorted(unsupported)}; "
            "rewrite it without them (for example with OPTIMIZE and PURGE) to use it as a source."
        )
    schema = pa.schema(table.schema().to_arrow())
    _check_arrow_schema(source, uri, schema)
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0 or ("num_records" in actions.column_names and pc.sum(actions["num_records"]).as_py() == 0):
        # A window without events is normal; a source without any row is a loading mistake.
        raise SourceError(
            f"source {source.name!r} ({uri}) is empty: it holds no rows at all. Load its data first; "
            "nothing was written."
        )
    # Naive statistics are local times in an unknown zone: widen by a day rather than miss a file.
    slack = timedelta(days=1) if source.timezone else timedelta(0)
    files = data_files(table, stats_column=source.timestamp, start=start, end=end, slack=slack, actions=actions)
    if not files:
        return spark.createDataFrame([], _declared_schema(source, naive=_is_naive(schema, source.timestamp)))
    reader = spark.read
    if table.metadata().partition_columns:
        reader = reader.option("basePath", uri)
    return reader.parquet(*files)


def _read_parquet(spark: SparkSession, source: Source, uri: str) -> DataFrame:
    try:
        return spark.read.parquet(uri)
    except Exception as exc:  # Spark raises AnalysisException for a missing path
        raise SourceError(f"source {source.name!r}: cannot read Parquet at {uri} ({exc}); check Source.path.") from exc


def _arrow_dtype(data_type: pa.DataType) -> str:
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "string"
    if pa.types.is_timestamp(data_type):
        return "timestamp" if data_type.tz else "timestamp_ntz"
    mapping = {
        pa.int64(): "int64",
        pa.int32(): "int32",
        pa.float64(): "float64",
        pa.float32(): "float32",
        pa.bool_(): "bool",
        pa.date32(): "date",
    }
    return mapping.get(data_type, str(data_type))


def _is_naive(schema: pa.Schema, column: str) -> bool:
    return _arrow_dtype(schema.field(column).type) == "timestamp_ntz"


def _check_arrow_schema(source: Source, uri: str, schema: pa.Schema) -> None:
    actual = {field.name: _arrow_dtype(field.type) for field in schema}
    _check_columns(source, uri, actual)


def _check_columns(source: Source, uri: str, actual: dict[str, str]) -> None:
    """Every declared column exists with a compatible type; timestamps are tz-aware or declared."""
    for name, declared in source.columns.items():
        if name not in actual:
            raise SourceError(
                f"source {source.name!r} ({uri}): column {name!r} is missing; the table has "
                f"{sorted(actual)}. Fix the source or its declared columns."
            )
        found = actual[name]
        if found == "timestamp_ntz" and declared == "timestamp":
            if name == source.timestamp and source.timezone:
                continue
            raise SourceError(
                f"source {source.name!r} ({uri}): column {name!r} holds naive timestamps (no time zone). "
                "Write it as UTC-aware timestamps, or declare Source(timezone='...') for the event-time column."
            )
        if not can_widen(found, declared):
            raise SourceError(
                f"source {source.name!r} ({uri}): column {name!r} has type {found!r} but is declared "
                f"{declared!r}; fix the source data or the declared type."
            )


def _declared_schema(source: Source, naive: bool = False) -> T.StructType:
    fields = []
    for name, dtype in source.columns.items():
        data_type = T.TimestampNTZType() if (naive and name == source.timestamp) else spark_type(dtype)
        fields.append(T.StructField(name, data_type, True))
    return T.StructType(fields)


def _conform(source: Source, uri: str, frame: DataFrame) -> DataFrame:
    """Select the declared columns, widen types, and turn a declared-zone timestamp into UTC."""
    actual = {f.name: (dtype_of_spark(f.dataType) or f.dataType.simpleString()) for f in frame.schema.fields}
    _check_columns(source, uri, actual)
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
