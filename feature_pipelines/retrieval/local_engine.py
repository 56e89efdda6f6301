"""The local retrieval engine: observations in a pandas frame, feature rows read with delta-rs,
joined in this process by the NumPy kernels of `local_join`, and the result written by pyarrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import write_deltalake

from feature_pipelines.errors import RetrievalError
from feature_pipelines.retrieval.local_join import asof_indices, entity_codes, take_features
from feature_pipelines.retrieval.observations import FrameObservations, ObservationFiles, load_frame
from feature_pipelines.retrieval.request_columns import append_request_features
from feature_pipelines.retrieval.spans import FeatureSpan
from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.spec.durations import micros
from feature_pipelines.spec.feature_set import WINDOW_KEY_COLUMN, FeatureSet
from feature_pipelines.spec.request_features import RequestFeatures
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.stores.offline.delta_store import offline_schema


class LocalJoin:
    """The as-of join in this process, for observations and feature rows that fit in memory."""

    def load(
        self, source: pd.DataFrame | ObservationFiles, timestamp_column: str, selections: list[FeatureSelection]
    ) -> FrameObservations:
        """The observations (see `open_observations`) as a checked pandas frame."""
        return load_frame(source, timestamp_column, selections)

    def join(self, observations: FrameObservations, features: list[FeatureSpan]) -> pd.DataFrame:
        """The observations with each span's features appended, in the same rows and order."""
        frame = observations.frame
        if frame.empty:
            return observations.without_matches([f.selection for f in features])
        t_floor = _micros_floor(observations.t)
        t_ceil = _micros_ceil(observations.t)
        result = frame.copy()
        for feature in features:
            selection = feature.selection
            feature_set = selection.feature_set
            rows = self._feature_rows(feature)
            keys = feature_set.entity_names
            obs_codes, row_codes = entity_codes(
                [_key_array(frame, k, feature_set) for k in keys], [rows.column(k).combine_chunks() for k in keys]
            )
            row_ts = rows.column(feature_set.timestamp).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
            cutoff = t_floor - micros(feature_set.delay)
            oldest = t_ceil - micros(feature_set.ttl) if feature_set.ttl else None
            indices = asof_indices(obs_codes, cutoff, oldest, row_codes, row_ts)
            for name, column in zip(selection.columns, take_features(rows, list(selection.features), indices).values()):
                result[name] = column.to_pandas().to_numpy()
        return result

    def with_request_features(self, result: pd.DataFrame, request: RequestFeatures) -> pd.DataFrame:
        """The joined result with the request features' columns appended."""
        return append_request_features(result, request)

    def output(self, result: pd.DataFrame, output: str | Path | None, output_format: str) -> pd.DataFrame | str:
        """The result, or the path it was written to when `output` is given."""
        return result if output is None else write_frame(result, output, output_format)

    def _feature_rows(self, feature: FeatureSpan) -> pa.Table:
        """The span's rows of the offline table, only the columns the join reads."""
        if feature.table is None:
            schema = offline_schema(feature.selection.feature_set)
            return pa.schema([schema.field(c) for c in feature.columns]).empty_table()
        first, last = feature.first, feature.last
        in_span = (pc.field(WINDOW_KEY_COLUMN) >= first) & (pc.field(WINDOW_KEY_COLUMN) <= last)
        return read_delta(feature.table.delta, columns=feature.columns, filter=in_span,
                          prune=[(WINDOW_KEY_COLUMN, ">=", first), (WINDOW_KEY_COLUMN, "<=", last)])


def write_frame(frame: pd.DataFrame, output: str | Path, output_format: str) -> str:
    """Write a retrieval result as one Parquet file or a Delta table; return the path."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if output_format == "delta":
        write_deltalake(str(output), table, mode="overwrite")
    elif output_format == "parquet":
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, str(output))
    else:
        raise RetrievalError(f"output format {output_format!r} is unknown; use 'parquet' or 'delta'.")
    return str(output)


def _key_array(frame: pd.DataFrame, column: str, feature_set: FeatureSet) -> pa.Array:
    """An observation key column as Arrow, in the type the feature set stores the key in."""
    dtype = next(e.dtype for e in feature_set.entities if e.name == column)
    values = pa.array(frame[column], from_pandas=True)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    try:
        return values.cast(arrow_type(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RetrievalError(
            f"observation column {column!r} has type {values.type}, but feature set {feature_set.key} keys "
            f"{column!r} as {dtype}; convert the column (e.g. frame[{column!r}].astype(str))."
        ) from exc


def _micros_floor(t: pd.Series) -> np.ndarray:
    return t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1000


def _micros_ceil(t: pd.Series) -> np.ndarray:
    return -((-t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)) // 1000)
