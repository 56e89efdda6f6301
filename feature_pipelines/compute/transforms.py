"""Execution: turn source rows into feature rows for a range of windows, with Spark.

Three ways, one per spec style: declarative rolling aggregates, a user's Spark function,
or a passthrough of precomputed columns.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F

from feature_pipelines.spec.durations import epoch_micros, micros, parse_duration
from feature_pipelines.errors import FeatureStoreError, TransformOutputError, inline
from feature_pipelines.spec.feature_set import Aggregate, FeatureSet, WindowContext
from feature_pipelines.planning.windows import WindowRange

_MICROS = "__us"
_IS_EVENT = "__is_event"
# Running totals of float columns: exact, and wide enough for 10^20 before the point.
_EXACT_DECIMAL = "decimal(38,18)"


def compute_features(
    spark: SparkSession, feature_set: FeatureSet, source: DataFrame, windows: WindowRange
) -> DataFrame:
    """Feature rows for `windows`, before validation: keys, ts and features (other columns allowed)."""
    if feature_set.aggregates:
        return rolling_aggregates(feature_set, source, windows)
    if feature_set.transform is not None:
        context = WindowContext(windows.start, windows.end, windows.keys, spark)
        try:
            result = feature_set.transform(source, context)
        except FeatureStoreError:
            raise
        except Exception as exc:
            name = getattr(feature_set.transform, "__qualname__", "transform")
            raise TransformOutputError(
                f"feature set {feature_set.key}: transform {name} raised {type(exc).__name__}: {inline(exc)}. "
                "Nothing was written; fix the transform and re-run."
            ) from exc
        if not isinstance(result, DataFrame):
            raise TransformOutputError(
                f"feature set {feature_set.key}: transform returned {type(result).__name__}; "
                "it must return a Spark DataFrame."
            )
        return result
    return source.select(
        *feature_set.entity_names,
        F.col(feature_set.source.timestamp).alias(feature_set.timestamp),
        *feature_set.feature_names,
    )


def rolling_aggregates(feature_set: FeatureSet, source: DataFrame, windows: WindowRange) -> DataFrame:
    """Exact trailing aggregates, as a step function of time.

    A value at `ts` covers events with event time in `(ts - window, ts]`. Such a value changes
    only when an event arrives (at `e`) or leaves a window (at `e + window`), so one row at each
    of those instants inside `[start, end)` describes every trailing aggregate exactly: an as-of
    join at any time `t` finds the row that was current at `t`. Events in the lookback before
    `start` count too.

    Sums, counts and means are differences of two running totals, "up to ts" minus "up to
    ts - window", which Spark computes incrementally (linear in the rows of an entity, however
    busy it is). Float totals are kept as DECIMAL(38,18), so the difference is exact and does not
    depend on where the run's source range began: a range run and single-window runs give the
    same values. Min and max use a sliding frame.
    """
    keys = feature_set.entity_names
    value_columns = sorted({a.column for a in feature_set.aggregates if a.column})
    events = source.select(
        *keys,
        F.unix_micros(F.col(feature_set.source.timestamp)).alias(_MICROS),
        *value_columns,
        F.lit(1).cast("long").alias(_IS_EVENT),
    )
    window_micros = sorted({_micros(w) for a in feature_set.aggregates for w in a.windows})
    start_us, end_us = epoch_micros(windows.start), epoch_micros(windows.end)
    instants = (
        events.select(*keys, F.explode(F.array(*[F.col(_MICROS) + F.lit(o) for o in [0, *window_micros]])).alias(_MICROS))
        .where((F.col(_MICROS) >= start_us) & (F.col(_MICROS) < end_us))
        .distinct()
        .withColumn(_IS_EVENT, F.lit(0).cast("long"))
    )
    rows = events.unionByName(instants, allowMissingColumns=True)
    ordered = Window.partitionBy(*keys).orderBy(_MICROS)
    outputs = []
    for aggregate in feature_set.aggregates:
        for window in aggregate.windows:
            outputs.append(_aggregate(aggregate, ordered, _micros(window), feature_set).alias(aggregate.feature_name(window)))
    return rows.select(
        *keys,
        F.timestamp_micros(F.col(_MICROS)).alias(feature_set.timestamp),
        *outputs,
        F.col(_IS_EVENT),
    ).where(F.col(_IS_EVENT) == 0).drop(_IS_EVENT)


def _aggregate(aggregate: Aggregate, ordered: WindowSpec, window_us: int, feature_set: FeatureSet) -> Column:
    if aggregate.function in ("min", "max"):
        frame = ordered.rangeBetween(-(window_us - 1), 0)
        function = F.min if aggregate.function == "min" else F.max
        return function(F.col(aggregate.column)).over(frame)
    dtype = feature_set.source.columns.get(aggregate.column) if aggregate.column else None
    if aggregate.function == "count":
        counted = F.col(_IS_EVENT) if aggregate.column is None else F.col(aggregate.column).isNotNull().cast("long")
        return _windowed_total(counted, ordered, window_us)
    exact_type = "long" if dtype in ("int64", "int32") else _EXACT_DECIMAL
    total = _windowed_total(F.col(aggregate.column).cast(exact_type), ordered, window_us)
    if aggregate.function == "sum":
        # An empty window sums to zero, as a count of nothing is zero.
        return total if exact_type == "long" else total.cast("double")
    count = _windowed_total(F.col(aggregate.column).isNotNull().cast("long"), ordered, window_us)
    return F.when(count > 0, total.cast("double") / count)


def _windowed_total(value: Column, ordered: WindowSpec, window_us: int) -> Column:
    """Sum of `value` over `(ts - window, ts]`: the running total at ts minus the one at ts - window."""
    zero = F.lit(0)
    up_to_now = F.coalesce(F.sum(value).over(ordered.rangeBetween(Window.unboundedPreceding, 0)), zero)
    up_to_start = F.coalesce(F.sum(value).over(ordered.rangeBetween(Window.unboundedPreceding, -window_us)), zero)
    return up_to_now - up_to_start


def _micros(window: str) -> int:
    return micros(parse_duration(window, field="window"))
