"""The Spark point-in-time join engine, for observation sets that do not fit one machine.

Per feature set, in three steps, so that the wide feature rows are never sorted:

1. Match on keys only: observations (row id, keys, time - delay) and feature rows (keys, ts)
   are unioned and sorted per entity by (time, rows-before-observations); the last feature
   `ts` seen before an observation is its match. Narrow rows, one shuffle: n log n, unlike a
   range join that pairs every observation with every older row of its entity.
2. Fetch values: the matched (keys, ts) pairs, at most one per observation, are equi-joined to
   the feature rows ((keys, ts) is unique in the offline store). When the observations are few
   enough, the matches are broadcast, so the wide feature rows are only scanned, never shuffled.
3. Attach: the values join the observations on their row id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from feature_pipelines.spec.durations import micros

ROW_ID = "__row"
T_FLOOR = "__t_floor_us"  # observation time in whole microseconds, rounded down
T_CEIL = "__t_ceil_us"  # ... and rounded up
_T = "__t_us"
_KIND = "__kind"
_MATCH = "__match_us"


@dataclass(frozen=True)
class SparkFeatureRequest:
    """What to take from one feature set's offline rows."""

    keys: list[str]
    rows: DataFrame
    timestamp: str
    features: list[str]
    columns: list[str]
    delay: timedelta
    lookback: timedelta | None


def asof_join_spark(
    observations: DataFrame, requests: list[SparkFeatureRequest], *, broadcast_matches: bool
) -> DataFrame:
    """Observations plus the requested feature columns, ordered by ROW_ID.

    `observations` carries ROW_ID, T_FLOOR and T_CEIL besides its own columns; the result keeps
    ROW_ID and drops the other two.
    """
    result = observations
    for request in requests:
        values = _matched_values(observations, request, broadcast_matches)
        result = result.join(values, ROW_ID, "left")
    carried = [c for c in observations.columns if c not in (T_FLOOR, T_CEIL)]
    return result.select(*carried, *(c for r in requests for c in r.columns)).orderBy(ROW_ID)


def _matched_values(observations: DataFrame, request: SparkFeatureRequest, broadcast_matches: bool) -> DataFrame:
    """(ROW_ID, feature columns) for the observations that have a match in this feature set."""
    keys = request.keys
    left = observations.select(
        ROW_ID, *keys, (F.col(T_FLOOR) - F.lit(micros(request.delay))).alias(_T), T_CEIL, F.lit(1).alias(_KIND)
    )
    right = request.rows.select(
        F.lit(None).cast("long").alias(ROW_ID), *keys, F.unix_micros(F.col(request.timestamp)).alias(_T),
        F.lit(None).cast("long").alias(T_CEIL), F.lit(0).alias(_KIND),
    )
    ordered = Window.partitionBy(*keys).orderBy(_T, _KIND).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    # Sorted by time, the newest usable feature ts is the largest one seen so far.
    latest = F.max(F.when(F.col(_KIND) == 0, F.col(_T))).over(ordered)
    matches = left.unionByName(right).select(ROW_ID, *keys, _KIND, T_CEIL, latest.alias(_MATCH)).where(
        (F.col(_KIND) == 1) & F.col(_MATCH).isNotNull()
    )
    if request.lookback is not None:
        matches = matches.where(F.col(_MATCH) >= F.col(T_CEIL) - F.lit(micros(request.lookback)))
    values = request.rows.select(
        *keys, F.unix_micros(F.col(request.timestamp)).alias(_MATCH),
        *[F.col(n).alias(c) for n, c in zip(request.features, request.columns)],
    )
    matched = matches.select(ROW_ID, *keys, _MATCH)
    if broadcast_matches:
        matched = F.broadcast(matched)
    return matched.join(values, [*keys, _MATCH], "inner").select(ROW_ID, *request.columns)
