"""The Spark retrieval engine, for observations or feature rows too many for one machine.

Stored observations are read by the executors and never collected; a pandas frame is handed to
Spark. Feature rows are the span's Parquet files of the offline table, read by the executors; the
join is `spark_join.asof_join_spark`. Results of stored observations are written by the executors
(or collected when no output is given); results of a frame come back as a frame.

This module imports pyspark: import it only when the Spark engine runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark import cloudpickle
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from feature_pipelines.compute.spark_session import spark_session
from feature_pipelines.errors import FeatureStoreError, RequestFeatureError, RetrievalError
from feature_pipelines.retrieval.local_engine import write_frame
from feature_pipelines.retrieval.request_columns import append_request_features
from feature_pipelines.retrieval.observations import (
    FrameObservations,
    ObservationFiles,
    load_frame,
    null_timestamps_error,
)
from feature_pipelines.retrieval.spans import FeatureSpan, TimeSpan
from feature_pipelines.retrieval.spark_join import ROW_ID, T_CEIL, T_FLOOR, SparkFeatureRequest, asof_join_spark
from feature_pipelines.retrieval.spark_observations import from_files, from_pandas, write_output
from feature_pipelines.spec.dtypes import spark_type
from feature_pipelines.spec.feature_set import WINDOW_KEY_COLUMN
from feature_pipelines.spec.request_features import RequestFeatures
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.offline.delta_files import data_files
from feature_pipelines.stores.online.codec import micros_to_datetime

# Up to this many observations, the Spark engine broadcasts their matches (at most one per
# observation and feature set) instead of shuffling the wide feature rows.
BROADCAST_MAX_ROWS = 5_000_000

@dataclass(frozen=True)
class SparkObservations:
    """Stored observations as the executors read them, with ROW_ID, T_FLOOR and T_CEIL (see
    `spark_observations`); `stored` gives their count and Arrow schema."""

    frame: DataFrame
    stored: ObservationFiles
    span: TimeSpan

    @property
    def rows(self) -> int:
        return self.stored.rows


@dataclass(frozen=True)
class SparkResult:
    """The join of stored observations, in observation order, not yet computed."""

    joined: DataFrame  # without ROW_ID
    observations: SparkObservations


class SparkJoin:
    """The as-of join in Spark. `spark` is a session (or anything that acts as one); without it,
    the session `compute.spark_session` builds from the environment, on first use."""

    def __init__(self, spark: Any = None):
        self._spark = spark

    @property
    def spark(self) -> Any:
        if self._spark is None:
            self._spark = spark_session()
        return self._spark

    def load(
        self, source: pd.DataFrame | ObservationFiles, timestamp_column: str, selections: list[FeatureSelection]
    ) -> FrameObservations | SparkObservations:
        """Stored observations (see `open_observations`) read by the executors and checked there; a
        frame, or stored files holding no rows, checked in pandas."""
        if not isinstance(source, ObservationFiles) or not source.rows:
            return load_frame(source, timestamp_column, selections)
        observations = from_files(self.spark, source, timestamp_column)
        nulls, t_low, t_high = observations.agg(
            F.count_if(F.col(timestamp_column).isNull()), F.min(T_FLOOR), F.max(T_CEIL)
        ).first()
        if nulls:
            raise null_timestamps_error(timestamp_column, int(nulls))
        span = micros_to_datetime(int(t_low)), micros_to_datetime(int(t_high))
        return SparkObservations(observations, source, span)

    def join(
        self, observations: FrameObservations | SparkObservations, features: list[FeatureSpan]
    ) -> pd.DataFrame | SparkResult:
        """The observations with each span's features appended, in the same order: a frame for a
        frame, a SparkResult for stored observations."""
        if isinstance(observations, SparkObservations):
            joined = self.asof_join(observations.frame, features,
                                    broadcast_matches=observations.rows <= BROADCAST_MAX_ROWS)
            return SparkResult(joined.drop(ROW_ID), observations)
        frame = observations.frame
        if frame.empty:
            return observations.without_matches([f.selection for f in features])
        joined = self.asof_join(from_pandas(self.spark, frame, observations.timestamp_column), features,
                                broadcast_matches=len(frame) <= BROADCAST_MAX_ROWS)
        out = _to_pandas(joined.drop(ROW_ID), list(frame.columns), pa.Schema.from_pandas(frame.head(0), preserve_index=False))
        out.index = frame.index
        return out

    def with_request_features(
        self, result: pd.DataFrame | SparkResult, request: RequestFeatures
    ) -> pd.DataFrame | SparkResult:
        """The joined result with the request features' columns appended: here for a frame, by the
        executors for stored observations (each batch through the same `append_request_features`)."""
        if isinstance(result, pd.DataFrame):
            return append_request_features(result, request)
        # The functions are in feature_defs/, which the executors need not have: ship them by value.
        for bound in request.bound:
            module = sys.modules.get(bound.feature.function.__module__)
            if module is not None and module.__name__ != "__main__":
                cloudpickle.register_pickle_by_value(module)
        joined = result.joined
        schema = T.StructType([*joined.schema.fields,
                               *(T.StructField(n, spark_type(d), True) for n, d in request.outputs.items())])
        return SparkResult(joined.mapInPandas(partial(_append_to_batches, request=request), schema), result.observations)

    def output(
        self, result: pd.DataFrame | SparkResult, output: str | Path | None, output_format: str
    ) -> pd.DataFrame | str:
        """The result as a frame, or the path it was written to when `output` is given (by the
        executors for stored observations)."""
        if isinstance(result, pd.DataFrame):
            return result if output is None else write_frame(result, output, output_format)
        try:
            if output is None:
                observations = result.observations
                columns = observations.frame.drop(ROW_ID, T_FLOOR, T_CEIL).columns
                return _to_pandas(result.joined, columns, observations.stored.schema)
            return write_output(result.joined, str(output), output_format)
        except Exception as exc:
            failed = _request_feature_failure(exc)
            if failed is None:
                raise
            raise failed from exc

    def asof_join(self, observations: DataFrame, features: list[FeatureSpan], *, broadcast_matches: bool) -> DataFrame:
        """The as-of join as a Spark DataFrame; `observations` carries ROW_ID, T_FLOOR and T_CEIL
        (see spark_observations), and the result is ordered by ROW_ID."""
        self.spark.conf.set("spark.sql.session.timeZone", "UTC")
        requests = []
        for feature in features:
            selection = feature.selection
            feature_set = selection.feature_set
            requests.append(SparkFeatureRequest(
                feature_set.entity_names, self._feature_rows(feature), feature_set.timestamp,
                list(selection.features), list(selection.columns), feature_set.delay, feature_set.ttl,
            ))
        return asof_join_spark(observations, requests, broadcast_matches=broadcast_matches)

    def _feature_rows(self, feature: FeatureSpan) -> DataFrame:
        """The span's rows of the offline table, read by the executors from its Parquet files."""
        columns = feature.columns
        files = []
        if feature.table is not None:
            files = data_files(feature.table.delta, partition_column=WINDOW_KEY_COLUMN, first_partition=feature.first,
                               last_partition=feature.last)
        if not files:
            return self.spark.createDataFrame([], _spark_schema(feature))
        # No partition discovery: the join reads no window_key, and the files of different runs sit
        # in different run folders (`run-<id>/window_key=.../`), which discovery takes for
        # conflicting table roots. The schema is the spec's: inferring it would cost a Spark job.
        return (self.spark.read.schema(_spark_schema(feature)).option("recursiveFileLookup", "true")
                .parquet(*files).select(*columns))


def _append_to_batches(batches: Iterator[pd.DataFrame], request: RequestFeatures) -> Iterator[pd.DataFrame]:
    """mapInPandas: each batch of the joined rows with the request features appended (on an executor)."""
    for batch in batches:
        yield append_request_features(batch, request)


_EXECUTOR_FAILURE = re.compile(r"\b(RequestFeatureError|RequestFieldError): (.+)")


def _request_feature_failure(exc: Exception) -> FeatureStoreError | None:
    """A request feature's error raised on an executor, which reaches the driver as Spark's text."""
    match = _EXECUTOR_FAILURE.search(str(exc))
    if match is None:
        return None
    return (RequestFeatureError if match.group(1) == "RequestFeatureError" else RetrievalError)(match.group(2))


def _spark_schema(feature: FeatureSpan) -> T.StructType:
    """The Spark schema of the columns the join reads (the offline table's types)."""
    feature_set = feature.selection.feature_set
    dtypes = {e.name: e.dtype for e in feature_set.entities} | {f.name: f.dtype for f in feature_set.features}
    dtypes[feature_set.timestamp] = "timestamp"
    return T.StructType([T.StructField(c, spark_type(dtypes[c]), True) for c in feature.columns])


def _to_pandas(joined: DataFrame, observation_columns: list[str], schema: pa.Schema) -> pd.DataFrame:
    """Collect a Spark result; time-zone-aware observation columns come back UTC-aware."""
    out = joined.toPandas()
    for column in observation_columns:
        field_type = schema.field(column).type if column in schema.names else None
        if field_type is not None and pa.types.is_timestamp(field_type) and field_type.tz and out[column].dt.tz is None:
            out[column] = out[column].dt.tz_localize("UTC")
    return out
