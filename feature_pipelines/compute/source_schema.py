"""The source checks of a run that need no Spark: the table exists, can be read file by file,
holds rows, and has the declared columns with their types (timestamps UTC-aware unless the
source declares a zone).

One rule, `check_columns`, judges a schema however it was read: from the Delta log (delta-rs,
milliseconds) before any run is recorded or Spark starts, and from Spark's view of Parquet
sources when a run reads them. No pyspark here, so the CLI can check before it launches a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from feature_pipelines.errors import SourceError
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.dtypes import can_widen
from feature_pipelines.spec.feature_set import Source
from feature_pipelines.stores.offline.delta_files import UNSUPPORTED_READER_FEATURES, find_table


@dataclass(frozen=True)
class CheckedSource:
    """A Delta source that passed the checks: its table, schema and add actions (file list)."""

    source: Source
    uri: str
    table: DeltaTable
    schema: pa.Schema
    actions: pa.Table

    @property
    def naive_timestamp(self) -> bool:
        """Whether the event-time column holds naive timestamps (allowed with Source.timezone)."""
        return arrow_dtype(self.schema.field(self.source.timestamp).type) == "timestamp_ntz"


def check_source(source: Source, root: str, storage_options: dict[str, str] | None = None) -> CheckedSource | None:
    """The checks a run makes before reading the source, from metadata alone; raise a SourceError
    naming the source, the column and the fix. Parquet-folder sources have no log to read cheaply:
    None, and the run checks them as Spark reads them."""
    if source.format != "delta":
        return None
    return open_checked_source(source, resolve_path(root, source.path), storage_options)


def open_checked_source(source: Source, uri: str, storage_options: dict[str, str] | None = None) -> CheckedSource:
    """The Delta source at `uri`, checked: it exists, has no reader features that change how
    its files map to rows, holds rows, and matches the declared columns."""
    table = find_table(uri, storage_options)
    if table is None:
        raise SourceError(
            f"source {source.name!r}: no Delta table at {uri}; check Source.path and the source root "
            "(FEATURESTORE_SOURCE_ROOT), or generate the sample data with `featurestore generate`."
        )
    unsupported = set(table.protocol().reader_features or []) & UNSUPPORTED_READER_FEATURES
    if unsupported:
        raise SourceError(
            f"source {source.name!r}: Delta table {uri} uses reader features {sorted(unsupported)}; "
            "rewrite it without them (for example with OPTIMIZE and PURGE) to use it as a source."
        )
    schema = pa.schema(table.schema().to_arrow())
    check_columns(source, uri, {field.name: arrow_dtype(field.type) for field in schema})
    # Read as a stream: `pa.table()` on deltalake's Arrow object imports pandas.
    actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
    if actions.num_rows == 0 or ("num_records" in actions.column_names and pc.sum(actions["num_records"]).as_py() == 0):
        # A window without events is normal; a source without any row is a loading mistake.
        raise SourceError(
            f"source {source.name!r} ({uri}) is empty: it holds no rows at all. Load its data first; "
            "nothing was written."
        )
    return CheckedSource(source, uri, table, schema, actions)


def arrow_dtype(data_type: pa.DataType) -> str:
    """The spec's name of an Arrow type (`timestamp_ntz` for naive timestamps), or Arrow's own."""
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "string"
    if pa.types.is_timestamp(data_type):
        return "timestamp" if data_type.tz else "timestamp_ntz"
    mapping = {
        pa.int64(): "int64",
        pa.int32(): "int32",
        pa.float64(): "float64",
        pa.float32(): "float32",
        pa.bool_(): "bool",
        pa.date32(): "date",
    }
    return mapping.get(data_type, str(data_type))


def check_columns(source: Source, uri: str, actual: dict[str, str]) -> None:
    """Every declared column exists with a compatible type; timestamps are tz-aware or declared.
    `actual` maps each column of the table to its spec type name (`timestamp_ntz` when naive)."""
    for name, declared in source.columns.items():
        if name not in actual:
            raise SourceError(
                f"source {source.name!r} ({uri}): column {name!r} is missing; the table has "
                f"{sorted(actual)}. Add it to the source, or remove it from the source's declared columns."
            )
        found = actual[name]
        if found == "timestamp_ntz" and declared == "timestamp":
            if name == source.timestamp and source.timezone:
                continue
            raise SourceError(
                f"source {source.name!r} ({uri}): column {name!r} holds naive timestamps (no time zone). "
                "Write it as UTC-aware timestamps, or declare Source(timezone='...') for the event-time column."
            )
        if not can_widen(found, declared):
            raise SourceError(
                f"source {source.name!r} ({uri}): column {name!r} has type {found!r} but is declared "
                f"{declared!r}; fix the source data or the declared type."
            )
