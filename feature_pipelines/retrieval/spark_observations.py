"""Observations as Spark DataFrames for the Spark join engine, and writing its results.

Every observation gets a ROW_ID that orders the output like the input, and its time as whole
microseconds rounded down (T_FLOOR, for the delay cut-off) and up (T_CEIL, for the lookback
bound), so that sub-microsecond observation times join exactly as in the local engine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feature_pipelines.errors import RetrievalError
from feature_pipelines.retrieval.observations import ObservationFiles
from feature_pipelines.retrieval.spark_join import ROW_ID, T_CEIL, T_FLOOR
from feature_pipelines.stores.offline.executor_write import write_table
from feature_pipelines.retrieval.spark_parquet import NanosFrame, nanos_to_micros, read_parquet_files, with_timestamps

_FILE_BITS = 40  # row index within a file: up to 2^40 rows per file


def from_pandas(spark: SparkSession, frame: pd.DataFrame, timestamp_column: str) -> DataFrame:
    """A pandas frame (already checked) with ROW_ID, T_FLOOR and T_CEIL."""
    nanos = frame[timestamp_column].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64)
    indexed = frame.reset_index(drop=True).assign(**{
        ROW_ID: np.arange(len(frame), dtype=np.int64), T_FLOOR: nanos // 1000, T_CEIL: -((-nanos) // 1000),
    })
    return spark.createDataFrame(indexed)


def from_files(spark: SparkSession, source: ObservationFiles, timestamp_column: str) -> DataFrame:
    """Stored observations read by the executors, with ROW_ID = (file in path order, row in file)."""
    read = read_parquet_files(spark, source.files, source.schema, source.base_path)
    raw = read.frame
    # `_metadata` is only visible on the scan itself, so the row id comes first.
    files = sorted(r[0] for r in raw.select("_metadata.file_path").distinct().collect())
    ordinal = F.create_map(*[F.lit(x) for i, f in enumerate(files) for x in (f, i)])
    row_id = F.shiftleft(ordinal[F.col("_metadata.file_path")].cast("long"), _FILE_BITS) + F.col("_metadata.row_index")
    if timestamp_column in read.nanos:
        t = F.col(timestamp_column)
        floor, ceil = nanos_to_micros(t), nanos_to_micros(t, round_up=True)
    else:
        floor = ceil = F.unix_micros(F.col(timestamp_column))
    frame = raw.withColumns({ROW_ID: row_id, T_FLOOR: floor.cast("long"), T_CEIL: ceil.cast("long")})
    return with_timestamps(NanosFrame(frame, read.nanos))


def write_output(frame: DataFrame, output: str, output_format: str) -> str:
    """Write a Spark join result (already in observation order) as a Parquet folder or a Delta table."""
    if output_format == "parquet":
        frame.write.mode("overwrite").parquet(output)
        return output
    if output_format != "delta":
        raise RetrievalError(f"output format {output_format!r} is unknown; use 'parquet' or 'delta'.")
    # The executors write the files into the table; the driver commits them (schema included).
    write_table(frame.sparkSession, frame, output)
    return output
