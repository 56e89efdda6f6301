"""The Spark point-in-time join engine, for observation sets that do not fit one machine.

Per feature set, observations and feature rows are unioned and sorted per entity by
(time, rows-before-observations); the last feature row seen before each observation is its
match. Observations carry all their columns through the union, so no join back is needed:
one shuffle and one sort per feature set, n log n, instead of a range join that pairs every
observation with every older row of its entity.
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feature_pipelines.durations import micros

ROW_ID = "__row"
_T = "__t_us"
_OBS_T = "__obs_us"
_KIND = "__kind"
_MATCH = "__match"


def asof_join_spark(
    observations: DataFrame,
    timestamp_column: str,
    features: list[tuple[list[str], DataFrame, str, list[str], list[str], timedelta, timedelta | None]],
) -> DataFrame:
    """Observations (with a ROW_ID column) plus the requested feature columns, ordered by ROW_ID.

    `features` holds, per feature set: its entity keys, its offline rows, the name of their
    timestamp column, the feature names to take, their output names, the source delay and the
    temporal join lookback (None for no limit).
    """
    result = observations
    for keys, rows, ts_column, names, columns, delay, lookback in features:
        result = _with_features(result, timestamp_column, keys, rows, ts_column, names, columns, delay, lookback)
    return result.orderBy(ROW_ID)


def _with_features(
    observations: DataFrame,
    timestamp_column: str,
    keys: list[str],
    rows: DataFrame,
    ts_column: str,
    names: list[str],
    columns: list[str],
    delay: timedelta,
    lookback: timedelta | None,
) -> DataFrame:
    carried = observations.columns
    t_us = F.unix_micros(F.col(timestamp_column))
    left = observations.select(
        *carried,
        (t_us - F.lit(micros(delay))).alias(_T),
        t_us.alias(_OBS_T),
        F.lit(1).alias(_KIND),
    )
    right = rows.select(
        *keys,
        F.unix_micros(F.col(ts_column)).alias(_T),
        F.lit(0).alias(_KIND),
        F.struct(F.unix_micros(F.col(ts_column)).alias("ts_us"), *[F.col(n) for n in names]).alias(_MATCH),
    )
    ordered = Window.partitionBy(*keys).orderBy(_T, _KIND).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    latest = F.last(F.col(_MATCH), ignorenulls=True).over(ordered)
    joined = (
        left.unionByName(right, allowMissingColumns=True)
        .select(*carried, _KIND, _OBS_T, latest.alias(_MATCH))
        .where(F.col(_KIND) == 1)
    )
    usable: Column = F.col(f"{_MATCH}.ts_us").isNotNull()
    if lookback is not None:
        usable = usable & (F.col(f"{_MATCH}.ts_us") >= F.col(_OBS_T) - F.lit(micros(lookback)))
    return joined.select(*carried, *[F.when(usable, F.col(f"{_MATCH}.{n}")).alias(c) for n, c in zip(names, columns)])
