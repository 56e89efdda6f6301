"""Turn specs and materialization results into Dagster metadata shown in the UI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

from feature_pipelines.materialize import MaterializationResult
from feature_pipelines.retrieval_spec import FeatureSelection
from feature_pipelines.spec import FeatureSet

_PREVIEW_ROWS = 10


def column_schema(feature_set: FeatureSet) -> TableSchema:
    """The offline table's columns with their types and descriptions."""
    columns = [TableColumn(e.name, e.dtype, description=e.description or "entity key") for e in feature_set.entities]
    columns.append(TableColumn(feature_set.timestamp, "timestamp", description="feature timestamp (UTC)"))
    columns += [TableColumn(f.name, f.dtype, description=f.description) for f in feature_set.features]
    return TableSchema(columns=columns)


def definition_metadata(feature_set: FeatureSet, file: Path | None, table_uri: str) -> dict[str, Any]:
    """Static metadata of the asset: what the spec says."""
    spec = feature_set.describe()
    metadata: dict[str, Any] = {
        "dagster/column_schema": column_schema(feature_set),
        "entities": ", ".join(f"{k} ({v})" for k, v in spec["entities"].items()),
        "source": feature_set.source.name,
        "compute": spec["compute"],
        "cadence": feature_set.partitions.cadence,
        "source_lookback": spec["source_lookback"],
        "temporal_join_lookback": spec["temporal_join_lookback"] or "none",
        "source_delay": spec["source_delay"],
        "offline_table": MetadataValue.path(table_uri),
        "stores": ", ".join(
            s for s, on in (("offline", feature_set.materialization.offline), ("online", feature_set.materialization.online)) if on
        ),
    }
    if file is not None:
        metadata["definition_file"] = MetadataValue.path(str(file))
    return metadata


def materialization_metadata(result: MaterializationResult) -> dict[str, Any]:
    """What one run did: rows, windows, Delta version, statistics, a preview, timings."""
    keys = result.window_keys
    metadata: dict[str, Any] = {
        "dagster/row_count": result.rows,
        "windows": f"{keys[0]} .. {keys[-1]} ({len(keys)} windows)" if len(keys) > 1 else keys[0],
        "rows_per_window": MetadataValue.json(result.rows_per_window),
        "dagster/column_schema": column_schema(result.feature_set),
        "feature_stats": MetadataValue.md(_stats_table(result)),
        "preview": MetadataValue.md(_preview(result)),
        "duration_s": round(result.duration_s, 3),
        "timings": MetadataValue.json({k: round(v, 3) for k, v in result.timings.items()}),
    }
    if result.table_version is not None:
        metadata["delta_version"] = result.table_version
        metadata["dagster/uri"] = MetadataValue.path(result.table_uri or "")
    if result.online is not None:
        metadata["online_keys_written"] = result.online.written
        metadata["online_rows_offered"] = result.online.rows
        metadata["online_kept_newer"] = result.online.kept_newer
    return metadata


def _stats_table(result: MaterializationResult) -> str:
    lines = ["| feature | rows | nulls | null % | min | max |", "|---|---|---|---|---|---|"]
    for name, stats in result.stats.items():
        share = (100.0 * stats.nulls / stats.count) if stats.count else 0.0
        lines.append(
            f"| {name} | {stats.count} | {stats.nulls} | {share:.2f} | {_fmt(stats.minimum)} | {_fmt(stats.maximum)} |"
        )
    return "\n".join(lines)


def _preview(result: MaterializationResult) -> str:
    if result.preview.empty:
        return "_no rows in these windows_"
    return result.preview.to_markdown(index=False)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)




def dataset_metadata(
    frame: pd.DataFrame, selections: list[FeatureSelection], timestamp_column: str | None, output: str
) -> dict[str, Any]:
    """What a training or inference dataset holds: rows, match and null rates, time range, preview."""
    rows = len(frame)
    metadata: dict[str, Any] = {"dagster/row_count": rows, "output": MetadataValue.path(output)}
    lines = ["| feature set | match rate | feature | null rate |", "|---|---|---|---|"]
    for selection in selections:
        values = frame[list(selection.columns)]
        matched = float(values.notna().any(axis=1).mean()) if rows else 0.0
        metadata[f"match_rate/{selection.feature_set.key}"] = round(matched, 4)
        for column in selection.columns:
            nulls = float(values[column].isna().mean()) if rows else 0.0
            lines.append(f"| {selection.feature_set.key} | {matched:.2%} | {column} | {nulls:.2%} |")
    metadata["feature_coverage"] = MetadataValue.md("\n".join(lines))
    if timestamp_column and rows:
        metadata["observation_time_range"] = f"{frame[timestamp_column].min().isoformat()} .. {frame[timestamp_column].max().isoformat()}"
    metadata["preview"] = MetadataValue.md(frame.head(_PREVIEW_ROWS).to_markdown(index=False) if rows else "_empty_")
    return metadata
