"""Materialize windows of a feature set: source → Spark → validated rows → Delta.

Publishing to Redis is a separate step (`online_publish.py`).

The executors write the computed rows as Parquet into a folder of the Delta table named after
the run (`spark_delta_write`), so the transform runs once and validation and statistics read
those files; the driver then commits them in one Delta transaction. Rows never pass through
the driver, so a window may be larger than the driver's memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from feature_pipelines.spec.dtypes import NUMERIC
from feature_pipelines.errors import FeatureStoreError, TransformOutputError, inline
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, OfflineTable, offline_schema
from feature_pipelines.compute.quality import WindowFeatureStats
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.compute.source_reader import read_source
from feature_pipelines.compute.spark_session import SESSION_SETTINGS
from feature_pipelines.stores.offline.executor_write import RunFiles
from feature_pipelines.spec.feature_set import CREATED_COLUMN, WINDOW_KEY_COLUMN, FeatureSet
from feature_pipelines.compute.transforms import compute_features
from feature_pipelines.compute.validation import conform_output, validate_output
from feature_pipelines.planning.windows import contiguous_ranges, source_range, window_for_key

_SPARK_KEY_FORMAT = {"daily": "yyyy-MM-dd", "hourly": "yyyy-MM-dd-HH:mm"}
_TRUNC_UNIT = {"daily": "day", "hourly": "hour"}
_PREVIEW_ROWS = 5


@dataclass
class MaterializationResult:
    feature_set: FeatureSet
    window_keys: list[str]
    rows: int
    rows_per_window: dict[str, int]
    table_version: int | None
    table_uri: str | None
    table: OfflineTable  # as the run left it: the checks read the written windows through it
    stats: dict[str, WindowFeatureStats]
    window_stats: dict[str, dict[str, WindowFeatureStats]]
    preview: pd.DataFrame
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stores:
    """Where a run reads and writes; built from Dagster resources or directly in tests."""

    source_root: str
    offline: DeltaOfflineStore
    online: RedisOnlineStore | None
    source_storage_options: dict[str, str] = field(default_factory=dict)


def materialize_windows(
    spark: SparkSession,
    feature_set: FeatureSet,
    window_keys: list[str],
    stores: Stores,
    run_id: str | None = None,
) -> MaterializationResult:
    """Compute `window_keys` and replace them in the offline store (one commit)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    table = stores.offline.open(feature_set)  # refuse a changed definition before computing anything
    for key, value in SESSION_SETTINGS.items():
        spark.conf.set(key, value)
    ranges = contiguous_ranges([window_for_key(feature_set, k) for k in window_keys])
    keys = [k for r in ranges for k in r.keys]
    frames = []
    for window_range in ranges:
        low, high = source_range(feature_set, window_range)
        source = read_source(spark, feature_set.source, stores.source_root, low, high, stores.source_storage_options or None)
        frames.append(conform_output(feature_set, compute_features(spark, feature_set, source, window_range)))
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    created = datetime.now(timezone.utc)
    cadence = feature_set.partitions.cadence
    window_start = F.date_trunc(_TRUNC_UNIT[cadence], F.col(feature_set.timestamp))
    rows = rows.withColumn(WINDOW_KEY_COLUMN, F.date_format(window_start, _SPARK_KEY_FORMAT[cadence])).withColumn(
        CREATED_COLUMN, F.lit(created)
    )

    files = RunFiles.new(table.uri, run_id, stores.offline.storage_options or None)
    try:
        _write(feature_set, rows, files)
        timings["compute_s"] = time.perf_counter() - started
        staged = files.read(spark, staged_schema(feature_set))
        validate_output(feature_set, staged, ranges)
        stats, window_stats = _statistics(feature_set, staged)
        per_window = {k: next(iter(v.values())).count for k, v in window_stats.items()}
        preview = staged.orderBy(*feature_set.entity_names, feature_set.timestamp).limit(_PREVIEW_ROWS).toPandas()
        timings["validate_s"] = time.perf_counter() - started - timings["compute_s"]
        mark = time.perf_counter()
        actions = files.add_actions()
    except BaseException:
        files.remove()
        raise
    # Not inside the cleanup above: the commit may succeed and the window-log append after it
    # fail (the next reader logs the windows from the commit), and then the files belong to the
    # table. A commit that fails leaves them to vacuum.
    version = table.commit_files(
        actions,
        keys,
        commit_metadata={"run_id": run_id or "", "created": created.isoformat()},
        rows_per_window=per_window,
    )
    timings["offline_write_s"] = time.perf_counter() - mark

    return MaterializationResult(
        feature_set=feature_set,
        window_keys=keys,
        rows=sum(per_window.values()),
        rows_per_window={k: per_window.get(k, 0) for k in keys},
        table_version=version,
        table_uri=table.uri,
        table=table,
        stats=stats,
        window_stats=window_stats,
        preview=preview,
        duration_s=time.perf_counter() - started,
        timings=timings,
    )


def _write(feature_set: FeatureSet, rows: DataFrame, files: RunFiles) -> None:
    """Run the transform once, writing its rows from the executors; user errors are named."""
    try:
        files.write(rows, [WINDOW_KEY_COLUMN])
    except FeatureStoreError:
        raise
    except Exception as exc:
        raise TransformOutputError(
            f"feature set {feature_set.key}: computing the windows failed: {inline(exc)}. "
            "Nothing was written; fix the transform or the source and re-run."
        ) from exc


def staged_schema(feature_set: FeatureSet) -> T.StructType:
    """The Spark schema of a run's rows as written: the offline table's columns."""
    return from_arrow_schema(offline_schema(feature_set))


def _statistics(
    feature_set: FeatureSet, staged: DataFrame
) -> tuple[dict[str, WindowFeatureStats], dict[str, dict[str, WindowFeatureStats]]]:
    """Per-feature count, nulls, min, max, mean and distinct estimate, for the whole run and per
    window, in one aggregation over the staged rows."""
    numeric = {f.name for f in feature_set.features if f.dtype in NUMERIC | {"bool"}}
    aggregations = [F.count(F.lit(1)).alias("__rows")]
    for name in feature_set.feature_names:
        column = F.col(name).cast("double") if name in numeric else F.col(name)
        aggregations += [
            F.sum(F.col(name).isNull().cast("long")).alias(f"{name}__nulls"),
            F.min(name).alias(f"{name}__min"),
            F.max(name).alias(f"{name}__max"),
            (F.avg(column) if name in numeric else F.lit(None).cast("double")).alias(f"{name}__mean"),
            F.approx_count_distinct(name).alias(f"{name}__distinct"),
        ]
    grouped = staged.rollup(WINDOW_KEY_COLUMN).agg(*aggregations).collect()

    def stats_of(row: dict) -> dict[str, WindowFeatureStats]:
        rows = int(row["__rows"])
        return {
            name: WindowFeatureStats(
                rows, int(row[f"{name}__nulls"] or 0), row[f"{name}__min"], row[f"{name}__max"],
                row[f"{name}__mean"], int(row[f"{name}__distinct"] or 0),
            )
            for name in feature_set.feature_names
        }

    totals = {name: WindowFeatureStats(0, 0, None, None) for name in feature_set.feature_names}
    per_window = {}
    for row in (r.asDict() for r in grouped):
        if row[WINDOW_KEY_COLUMN] is None:  # the rollup's grand total
            totals = stats_of(row)
        else:
            per_window[row[WINDOW_KEY_COLUMN]] = stats_of(row)
    return totals, per_window
