"""Turn specs and materialization results into Dagster metadata shown in the UI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
from dagster import AssetKey, MetadataValue, TableColumn, TableColumnDep, TableColumnLineage, TableSchema
from deltalake import DeltaTable

from feature_pipelines.stores.offline.delta_files import delta_dataset
from feature_pipelines.spec.durations import format_duration
from feature_pipelines.compute.materialize import MaterializationResult
from feature_pipelines.stores.online.redis_store import PublishResult
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.spec.feature_set import FeatureSet

_PREVIEW_ROWS = 10


def column_schema(feature_set: FeatureSet) -> TableSchema:
    """The offline table's columns with their types and descriptions."""
    columns = [TableColumn(e.name, e.dtype, description=e.description or "entity key") for e in feature_set.entities]
    columns.append(TableColumn(feature_set.timestamp, "timestamp", description="feature timestamp (UTC)"))
    columns += [TableColumn(f.name, f.dtype, description=f.description) for f in feature_set.features]
    return TableSchema(columns=columns)


def column_lineage(feature_set: FeatureSet, source: AssetKey) -> TableColumnLineage:
    """Which source columns each offline column comes from (declared or known from the spec)."""
    return TableColumnLineage(deps_by_column={
        column: [TableColumnDep(asset_key=source, column_name=name) for name in names]
        for column, names in feature_set.column_lineage().items()
    })


def definition_metadata(feature_set: FeatureSet, file: Path | None, table_uri: str, source: AssetKey) -> dict[str, Any]:
    """Static metadata of the asset: what the spec says."""
    spec = feature_set.describe()
    metadata: dict[str, Any] = {
        "dagster/column_schema": column_schema(feature_set),
        "dagster/column_lineage": column_lineage(feature_set, source),
        "freshness_deadline": f"{format_duration(feature_set.freshness_deadline)} after each window closes",
        "entities": ", ".join(f"{k} ({v})" for k, v in spec["entities"].items()),
        "source": feature_set.source.name,
        "compute": spec["compute"],
        "cadence": feature_set.partitions.cadence,
        "source_lookback": spec["source_lookback"],
        "temporal_join_lookback": spec["temporal_join_lookback"] or "none",
        "source_delay": spec["source_delay"],
        "offline_table": MetadataValue.path(table_uri),
        "stores": ", ".join(
            s for s, on in (("offline", feature_set.materialization.offline), ("online", feature_set.materialization.online),
                            ("streamed", feature_set.materialization.stream)) if on
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
    return metadata


def publish_metadata(result: PublishResult, window_keys: list[str], redis_url: str) -> dict[str, Any]:
    """What one online publish did."""
    return {
        "windows": f"{window_keys[0]} .. {window_keys[-1]} ({len(window_keys)} windows)" if len(window_keys) > 1 else window_keys[0],
        "online_rows_offered": result.rows,
        "online_keys_written": result.written,
        "online_kept_newer": result.kept_newer,
        "repaired_windows": ", ".join(result.repaired) or "none",
        "redis": redis_url,
    }


def _stats_table(result: MaterializationResult) -> str:
    """The whole run, then each window: count, nulls, min, max, mean and distinct estimate."""
    lines = ["| window | feature | rows | nulls | null % | min | max | mean | distinct ~ |", "|---|---|---|---|---|---|---|---|---|"]
    sections = [("all", result.stats)] + ([] if len(result.window_stats) < 2 else sorted(result.window_stats.items()))
    for window, stats_by_feature in sections:
        for name, stats in stats_by_feature.items():
            share = (100.0 * stats.nulls / stats.count) if stats.count else 0.0
            lines.append(
                f"| {window} | {name} | {stats.count} | {stats.nulls} | {share:.2f} | {_fmt(stats.minimum)} | "
                f"{_fmt(stats.maximum)} | {_fmt(stats.mean)} | {_fmt(stats.distinct)} |"
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
    output: str, output_format: str, selections: list[FeatureSelection], timestamp_column: str | None
) -> dict[str, Any]:
    """What a written training or inference dataset holds: rows, match and null rates, time range,
    preview. Reads the output in batches, so it works for datasets larger than memory."""
    dataset = _open_dataset(output, output_format)
    feature_columns = [c for s in selections for c in s.columns]
    read = feature_columns + ([timestamp_column] if timestamp_column else [])
    rows = 0
    nulls = dict.fromkeys(feature_columns, 0)
    matched = {s.feature_set.key: 0 for s in selections}
    t_low = t_high = None
    for batch in dataset.to_batches(columns=read):
        rows += batch.num_rows
        for column in feature_columns:
            nulls[column] += batch.column(column).null_count
        for selection in selections:
            present = [pc.is_valid(batch.column(c)) for c in selection.columns]
            any_present = present[0]
            for mask in present[1:]:
                any_present = pc.or_(any_present, mask)
            matched[selection.feature_set.key] += int(pc.sum(any_present).as_py() or 0)
        if timestamp_column and batch.num_rows:
            low, high = pc.min_max(batch.column(timestamp_column)).values()
            t_low = low.as_py() if t_low is None else min(t_low, low.as_py())
            t_high = high.as_py() if t_high is None else max(t_high, high.as_py())
    metadata: dict[str, Any] = {"dagster/row_count": rows, "output": MetadataValue.path(output)}
    lines = ["| feature set | match rate | feature | null rate |", "|---|---|---|---|"]
    for selection in selections:
        rate = matched[selection.feature_set.key] / rows if rows else 0.0
        metadata[f"match_rate/{selection.feature_set.key}"] = round(rate, 4)
        for column in selection.columns:
            lines.append(f"| {selection.feature_set.key} | {rate:.2%} | {column} | {(nulls[column] / rows if rows else 0.0):.2%} |")
    metadata["feature_coverage"] = MetadataValue.md("\n".join(lines))
    if t_low is not None:
        metadata["observation_time_range"] = f"{t_low.isoformat()} .. {t_high.isoformat()}"
    preview = dataset.head(_PREVIEW_ROWS).to_pandas() if rows else None
    metadata["preview"] = MetadataValue.md(preview.to_markdown(index=False) if preview is not None else "_empty_")
    return metadata


def _open_dataset(output: str, output_format: str) -> ds.Dataset:
    if output_format == "delta":
        return delta_dataset(DeltaTable(output))
    return ds.dataset(output, format="parquet")
