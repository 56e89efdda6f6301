"""Check a transform's output against the contract before anything is written."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_pipelines.spec.dtypes import can_widen, dtype_of_spark, spark_type
from feature_pipelines.errors import TransformOutputError
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.planning.windows import WindowRange

_EXAMPLES = 5


def conform_output(feature_set: FeatureSet, frame: DataFrame) -> DataFrame:
    """Keys, ts and features in spec order and declared types; a missing or mistyped column fails."""
    where = f"feature set {feature_set.key}"
    actual = {f.name: dtype_of_spark(f.dataType) or f.dataType.simpleString() for f in frame.schema.fields}
    declared = [(e.name, e.dtype) for e in feature_set.entities] + [(feature_set.timestamp, "timestamp")]
    declared += [(f.name, f.dtype) for f in feature_set.features]
    columns = []
    for name, dtype in declared:
        if name not in actual:
            raise TransformOutputError(
                f"{where}: the transform output has no column {name!r} (it has {sorted(actual)}); "
                "return every entity key, the timestamp and every declared feature."
            )
        if actual[name] == "timestamp_ntz":
            raise TransformOutputError(
                f"{where}: output column {name!r} holds naive timestamps; convert it to a UTC timestamp."
            )
        if not can_widen(actual[name], dtype):
            raise TransformOutputError(
                f"{where}: output column {name!r} has type {actual[name]!r} but the spec declares {dtype!r}; "
                "cast it in the transform or change the declared type."
            )
        column = F.col(name) if actual[name] == dtype else F.col(name).cast(spark_type(dtype))
        columns.append(column.alias(name))
    return frame.select(*columns)


def validate_output(feature_set: FeatureSet, frame: DataFrame, ranges: list[WindowRange]) -> None:
    """Non-null keys and ts, unique (keys, ts), every ts inside a requested window."""
    where = f"feature set {feature_set.key}"
    keys, ts = feature_set.entity_names, feature_set.timestamp
    null_key = reduce(lambda a, b: a | b, [F.col(k).isNull() for k in [*keys, ts]])
    examples = frame.where(null_key).select(*keys, ts).limit(_EXAMPLES).collect()
    if examples:
        raise TransformOutputError(
            f"{where}: {len(examples)}+ output rows have a null key or timestamp, e.g. "
            f"{_show(examples)}; drop or fill null keys in source {feature_set.source.name!r}."
        )
    duplicates = (
        frame.groupBy(*keys, ts).count().where(F.col("count") > 1).limit(_EXAMPLES).collect()
    )
    if duplicates:
        raise TransformOutputError(
            f"{where}: output rows are not unique on ({', '.join(keys)}, {ts}); duplicated keys, e.g. "
            f"{_show(duplicates)}. Aggregate or deduplicate them in the transform (or the source)."
        )
    inside = reduce(
        lambda a, b: a | b,
        [(F.col(ts) >= F.lit(r.start)) & (F.col(ts) < F.lit(r.end)) for r in ranges],
    )
    outside = frame.where(~inside).select(*keys, ts).limit(_EXAMPLES).collect()
    if outside:
        bounds = ", ".join(f"[{r.start.isoformat()}, {r.end.isoformat()})" for r in ranges)
        raise TransformOutputError(
            f"{where}: output rows have {ts} outside the windows being materialized ({bounds}), e.g. "
            f"{_show(outside)}; filter the output to the window bounds the transform receives."
        )


def _show(rows: list) -> str:
    return "; ".join(", ".join(f"{k}={v!r}" for k, v in row.asDict().items()) for row in rows)
