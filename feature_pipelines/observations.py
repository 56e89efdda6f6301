"""Observation frames for point-in-time retrieval: load them and check them before any join."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from deltalake import DeltaTable

from feature_pipelines.errors import RetrievalError
from feature_pipelines.retrieval_spec import FeatureSelection


def load_observations(observations: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A pandas frame from a frame, a Delta table or a Parquet file/folder."""
    if isinstance(observations, pd.DataFrame):
        return observations
    path = str(observations)
    local = Path(path)
    if "://" in path or (local / "_delta_log").is_dir():
        if DeltaTable.is_deltatable(path):
            return DeltaTable(path).to_pandas()
    if local.exists():
        return pq.read_table(path).to_pandas()
    raise RetrievalError(f"observations {path!r} is neither a Delta table nor a Parquet file or folder.")


def check_observations(frame: pd.DataFrame, timestamp_column: str, selections: list[FeatureSelection]) -> pd.Series:
    """Raise a RetrievalError for anything that makes the join ill-defined; return `t` in UTC."""
    if timestamp_column not in frame.columns:
        raise RetrievalError(
            f"observations have no timestamp column {timestamp_column!r} (columns: {list(frame.columns)}); "
            "pass timestamp_column=... naming it."
        )
    t = frame[timestamp_column]
    if not pd.api.types.is_datetime64_any_dtype(t):
        raise RetrievalError(
            f"observation column {timestamp_column!r} has type {t.dtype}, not timestamps; convert it with "
            "pd.to_datetime(..., utc=True)."
        )
    if getattr(t.dt, "tz", None) is None:
        raise RetrievalError(
            f"observation column {timestamp_column!r} holds naive timestamps (no time zone); make them "
            "UTC-aware, e.g. frame[col] = frame[col].dt.tz_localize('UTC') if they are UTC."
        )
    if t.isna().any():
        raise RetrievalError(
            f"observation column {timestamp_column!r} has {int(t.isna().sum())} null timestamps "
            f"(first at row {int(t.isna().to_numpy().argmax())}); drop or fill them."
        )
    for selection in selections:
        missing = [k for k in selection.feature_set.entity_names if k not in frame.columns]
        if missing:
            raise RetrievalError(
                f"observations lack entity key column(s) {missing} of feature set {selection.feature_set.key}; "
                f"observation columns are {list(frame.columns)}."
            )
        clash = [c for c in selection.columns if c in frame.columns]
        if clash:
            raise RetrievalError(
                f"observation column(s) {clash} have the same name as requested features of "
                f"{selection.feature_set.key}; rename them or request full names (full_names=True)."
            )
    return t.dt.tz_convert("UTC")
