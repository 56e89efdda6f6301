"""Read users' Parquet files in Spark, including nanosecond timestamps.

pandas writes timestamps in nanoseconds by default, and Spark refuses Parquet
`TIMESTAMP(NANOS)` columns unless `spark.sql.legacy.parquet.nanosAsLong` is set, in which case
they arrive as longs. Here they arrive as longs (named in `NanosFrame.nanos`), and callers turn
them into Spark timestamps with `nanos_to_timestamp` once they have taken what they need from the
full precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

_NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


@dataclass(frozen=True)
class NanosFrame:
    frame: DataFrame
    nanos: dict[str, bool]  # column -> whether it is naive (no time zone)


def nanosecond_columns(schema: pa.Schema) -> dict[str, bool]:
    """Timestamp columns stored in nanoseconds, with whether each is naive."""
    return {
        field.name: field.type.tz is None
        for field in schema
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns"
    }


def read_parquet_files(spark: SparkSession, files: list[str], schema: pa.Schema, base_path: str | None = None) -> NanosFrame:
    """The rows of `files` (whose Arrow schema is `schema`); nanosecond timestamps stay longs."""
    nanos = nanosecond_columns(schema)
    if nanos:
        # Session-wide by necessity: Spark consults it when the scan runs, not when it is defined.
        spark.conf.set(_NANOS_AS_LONG, "true")
    reader = spark.read
    if base_path:
        reader = reader.option("basePath", base_path)
    return NanosFrame(reader.parquet(*files), nanos)


def nanos_to_micros(column: Column, round_up: bool = False) -> Column:
    """Whole microseconds from nanoseconds, rounded down (or up). Decimal arithmetic keeps it
    exact: `/` on longs goes through a double, off by up to 128 ns at today's epoch values."""
    exact = column.cast("decimal(20,0)") / F.lit(1000).cast("decimal(4,0)")
    return (F.ceil(exact) if round_up else F.floor(exact)).cast("long")


def nanos_to_timestamp(column: Column, naive: bool) -> Column:
    """Nanoseconds since the epoch as a Spark timestamp (microseconds, rounded down)."""
    stamp = F.timestamp_micros(nanos_to_micros(column))
    return stamp.cast("timestamp_ntz") if naive else stamp


def with_timestamps(nanos_frame: NanosFrame) -> DataFrame:
    """The frame with every nanosecond column turned into a timestamp."""
    frame = nanos_frame.frame
    return frame.select(*[
        nanos_to_timestamp(F.col(c), nanos_frame.nanos[c]).alias(c) if c in nanos_frame.nanos else F.col(c)
        for c in frame.columns
    ])
