"""Observation frames for point-in-time retrieval: load them and check them before any join."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable

from feature_pipelines.stores.offline.delta_files import UNSUPPORTED_READER_FEATURES, data_files, read_delta
from feature_pipelines.errors import RetrievalError
from feature_pipelines.spec.request_features import NO_REQUEST_FEATURES, RequestFeatures
from feature_pipelines.spec.retrieval_spec import FeatureSelection


@dataclass(frozen=True)
class ObservationFiles:
    """Observations stored as a Delta table or Parquet file/folder, known from metadata alone."""

    path: str
    files: list[str]
    schema: pa.Schema
    rows: int
    base_path: str | None

    def load(self) -> pd.DataFrame:
        if self.base_path is None and len(self.files) == 1 and not self.path.endswith("/"):
            return pq.read_table(self.files[0]).to_pandas()
        if DeltaTable.is_deltatable(self.path):
            return read_delta(DeltaTable(self.path)).to_pandas()
        return ds.dataset(self.path, format="parquet", partitioning="hive").to_table().to_pandas()


def open_observation_files(path: str | Path) -> ObservationFiles:
    """Schema, size and files of stored observations, without reading their rows."""
    path = str(path)
    local = Path(path)
    if ("://" in path or (local / "_delta_log").is_dir()) and DeltaTable.is_deltatable(path):
        table = DeltaTable(path)
        unsupported = set(table.protocol().reader_features or []) & UNSUPPORTED_READER_FEATURES
        if unsupported:
            raise RetrievalError(
                f"observations {path!r}: Delta reader features {sorted(unsupported)} are not supported; "
                "rewrite the table without them or pass a DataFrame."
            )
        actions = pa.table(table.get_add_actions(flatten=True))
        rows = int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0
        base = path if table.metadata().partition_columns else None
        return ObservationFiles(path, data_files(table), pa.schema(table.schema().to_arrow()), rows, base)
    if not local.exists() and "://" not in path:
        raise RetrievalError(f"observations {path!r} is neither a Delta table nor a Parquet file or folder.")
    try:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        rows = dataset.count_rows()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RetrievalError(f"observations {path!r} cannot be read as Parquet: {exc}") from exc
    base = path if local.is_dir() else None
    return ObservationFiles(path, sorted(dataset.files), dataset.schema, rows, base)


def load_observations(observations: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A pandas frame from a frame, a Delta table or a Parquet file/folder."""
    if isinstance(observations, pd.DataFrame):
        return observations
    return open_observation_files(observations).load()


def open_observations(
    observations: pd.DataFrame | str | Path, timestamp_column: str | None, selections: list[FeatureSelection],
    request: RequestFeatures = NO_REQUEST_FEATURES,
) -> pd.DataFrame | ObservationFiles:
    """A frame as given, or stored observations known from their metadata, their columns checked
    (a frame's columns are checked with its values, when it is loaded; its request fields now).
    `timestamp_column` None: entity rows for batch inference, which get their one time from the caller."""
    if isinstance(observations, pd.DataFrame):
        if request:
            check_observation_schema(_schema_of(observations), None, selections, request)
        return observations
    stored = open_observation_files(observations)
    check_observation_schema(stored.schema, timestamp_column, selections, request)
    return stored


@dataclass(frozen=True)
class FrameObservations:
    """Checked observations in a pandas frame, with their times in UTC."""

    frame: pd.DataFrame
    t: pd.Series
    timestamp_column: str

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def span(self) -> tuple[datetime, datetime] | None:
        """The earliest and latest observation time in whole microseconds (rounded down), or
        None without observations."""
        if not len(self.t):
            return None
        return self.t.min().floor("us").to_pydatetime(), self.t.max().floor("us").to_pydatetime()

    def without_matches(self, selections: list[FeatureSelection]) -> pd.DataFrame:
        """The (empty) observations with empty columns for the requested features."""
        return self.frame.assign(**{c: pd.Series([], dtype=object) for s in selections for c in s.columns})


def load_frame(
    source: pd.DataFrame | ObservationFiles, timestamp_column: str, selections: list[FeatureSelection]
) -> FrameObservations:
    """Observations (from `open_observations`) as a checked pandas frame."""
    frame = source.load() if isinstance(source, ObservationFiles) else source
    return FrameObservations(frame, check_observations(frame, timestamp_column, selections), timestamp_column)


def check_observation_schema(
    schema: pa.Schema, timestamp_column: str | None, selections: list[FeatureSelection],
    request: RequestFeatures = NO_REQUEST_FEATURES,
) -> None:
    """Raise a RetrievalError for columns that make the join ill-defined (`timestamp_column` None:
    entity rows without times, checked for their keys and names only), or that the request
    features cannot read (a frame's values are checked as they are read)."""
    names = schema.names
    if timestamp_column is not None:
        _check_timestamp_column(schema, timestamp_column)
    for selection in selections:
        missing = [k for k in selection.feature_set.entity_names if k not in names]
        if missing:
            raise RetrievalError(
                f"observations lack entity key column(s) {missing} of feature set {selection.feature_set.key}; "
                f"observation columns are {names}."
            )
        clash = [c for c in selection.columns if c in names]
        if clash:
            raise RetrievalError(
                f"observation column(s) {clash} have the same name as requested features of "
                f"{selection.feature_set.key}; rename them or request full names (full_names=True)."
            )
    if request:
        request.check_columns(names, "observations")
        for name, dtype in request.fields.items():
            stored = schema.field(name).type
            if not pa.types.is_null(stored) and not _holds(stored, dtype):
                raise RetrievalError(f"observation column {name!r} has type {stored}, but request field {name!r} is "
                                     f"{dtype}; convert the column.")


def _holds(arrow: pa.DataType, dtype: str) -> bool:
    """Whether a stored column of type `arrow` can hold a request field of type `dtype` (whole
    numbers in a float column are checked value by value)."""
    if dtype == "string":
        return pa.types.is_string(arrow) or pa.types.is_large_string(arrow)
    if dtype == "bool":
        return pa.types.is_boolean(arrow)
    return pa.types.is_integer(arrow) or pa.types.is_floating(arrow)


def _check_timestamp_column(schema: pa.Schema, timestamp_column: str) -> None:
    names = schema.names
    if timestamp_column not in names:
        raise RetrievalError(
            f"observations have no timestamp column {timestamp_column!r} (columns: {names}); "
            "pass timestamp_column=... naming it."
        )
    field = schema.field(timestamp_column)
    t_type = field.type
    if not pa.types.is_timestamp(t_type):
        described = (field.metadata or {}).get(b"dtype", str(t_type).encode()).decode()
        raise RetrievalError(
            f"observation column {timestamp_column!r} has type {described}, not timestamps; convert it with "
            "pd.to_datetime(..., utc=True)."
        )
    if t_type.tz is None:
        raise RetrievalError(
            f"observation column {timestamp_column!r} holds naive timestamps (no time zone); make them "
            "UTC-aware, e.g. frame[col] = frame[col].dt.tz_localize('UTC') if they are UTC."
        )


def null_timestamps_error(timestamp_column: str, count: int, first_row: int | None = None) -> RetrievalError:
    where = f" (first at row {first_row})" if first_row is not None else ""
    return RetrievalError(
        f"observation column {timestamp_column!r} has {count} null timestamps{where}; drop or fill them."
    )


def check_observations(frame: pd.DataFrame, timestamp_column: str, selections: list[FeatureSelection]) -> pd.Series:
    """Raise a RetrievalError for anything that makes the join ill-defined; return `t` in UTC."""
    check_observation_schema(_schema_of(frame), timestamp_column, selections)
    t = frame[timestamp_column]
    if t.isna().any():
        raise null_timestamps_error(timestamp_column, int(t.isna().sum()), int(t.isna().to_numpy().argmax()))
    return t.dt.tz_convert("UTC")


def _schema_of(frame: pd.DataFrame) -> pa.Schema:
    """Column names and types (timestamps with their zone), without converting any data; other
    columns keep their pandas dtype name as field metadata, for error messages."""
    fields = []
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):
            data_type = pa.timestamp(dtype.unit, tz=str(dtype.tz))
        elif pd.api.types.is_datetime64_dtype(dtype):
            data_type = pa.timestamp("ns")
        else:
            data_type = pa.null()
        fields.append(pa.field(str(name), data_type, metadata={"dtype": str(dtype)}))
    return pa.schema(fields)
