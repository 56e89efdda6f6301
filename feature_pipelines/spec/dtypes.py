"""The column types a spec may declare, and their Spark and Arrow equivalents.

Spark and Arrow types are built on first use: loading a spec (the feature server does, at every
start) needs neither pyspark nor pyarrow.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cache
from typing import TYPE_CHECKING

from feature_pipelines.errors import SpecError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import types as T

# One name per type; aliases map onto these.
_ALIASES = {
    "string": "string",
    "str": "string",
    "int64": "int64",
    "int": "int64",
    "long": "int64",
    "int32": "int32",
    "float64": "float64",
    "double": "float64",
    "float": "float64",
    "float32": "float32",
    "bool": "bool",
    "boolean": "bool",
    "timestamp": "timestamp",
    "date": "date",
}


@cache
def _spark_types() -> dict[str, T.DataType]:
    from pyspark.sql import types as T

    return {
        "string": T.StringType(),
        "int64": T.LongType(),
        "int32": T.IntegerType(),
        "float64": T.DoubleType(),
        "float32": T.FloatType(),
        "bool": T.BooleanType(),
        "timestamp": T.TimestampType(),
        "date": T.DateType(),
    }


@cache
def _arrow_types() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }


# Casts that never lose information; anything else in a transform's output is an error.
_WIDENING = {
    ("int32", "int64"),
    ("float32", "float64"),
    ("int32", "float64"),
}

NUMERIC = {"int64", "int32", "float64", "float32"}


def normalize_dtype(name: str, *, field: str) -> str:
    """Return the canonical type name, or raise a SpecError naming `field`."""
    canonical = _ALIASES.get(str(name).lower())
    if canonical is None:
        known = ", ".join(sorted(set(_ALIASES.values())))
        raise SpecError(f"{field}: unknown type {name!r}; use one of: {known}.")
    return canonical


def spark_type(dtype: str) -> T.DataType:
    return _spark_types()[dtype]


def arrow_type(dtype: str) -> pa.DataType:
    return _arrow_types()[dtype]


def dtype_of_spark(data_type: T.DataType) -> str | None:
    """The canonical name of a Spark type, or None when a spec cannot declare it."""
    from pyspark.sql import types as T

    for name, candidate in _spark_types().items():
        if candidate == data_type:
            return name
    if isinstance(data_type, T.TimestampNTZType):
        return "timestamp_ntz"
    return None


def can_widen(actual: str, declared: str) -> bool:
    """True when a column of type `actual` may be cast to `declared` without loss."""
    return actual == declared or (actual, declared) in _WIDENING


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def arrow_times(column: pa.Array | pa.ChunkedArray) -> list[datetime | None]:
    """An Arrow timestamp column as UTC datetimes (naive times count as UTC; nanoseconds are cut
    to microseconds). pyarrow's own conversion imports pandas: 0.2 s of every CLI command that reads a time."""
    import pyarrow as pa

    per_second = _PER_SECOND[column.type.unit]
    return [None if v is None else _EPOCH + timedelta(microseconds=v * 1_000_000 // per_second)
            for v in column.cast(pa.int64()).to_pylist()]
