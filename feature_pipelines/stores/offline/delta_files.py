"""Open and read Delta tables: open one with its storage options, select the Parquet files
that can hold rows of interest from the Delta log (Spark then reads just those files and needs
no Delta support of its own), and read tables as pyarrow datasets.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

from feature_pipelines.spec.dtypes import arrow_times

if TYPE_CHECKING:
    import pyarrow.dataset as ds  # imports pandas: 0.2 s that `featurestore status` does without

# Reader features that change how Parquet files map to rows; reading raw files would be wrong.
UNSUPPORTED_READER_FEATURES = {"deletionVectors", "columnMapping"}


def open_table(uri: str, storage_options: dict[str, str] | None = None) -> DeltaTable:
    """The Delta table at `uri` (empty storage options count as none)."""
    return DeltaTable(uri, storage_options=storage_options or None)


def table_exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    return DeltaTable.is_deltatable(uri, storage_options=storage_options or None)


def find_table(uri: str, storage_options: dict[str, str] | None = None) -> DeltaTable | None:
    """The Delta table at `uri`, or None when there is none."""
    return open_table(uri, storage_options) if table_exists(uri, storage_options) else None


def data_files(
    table: DeltaTable,
    *,
    stats_column: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    slack: timedelta = timedelta(0),
    partition_column: str | None = None,
    first_partition: str | None = None,
    last_partition: str | None = None,
    actions: pa.Table | None = None,
) -> list[str]:
    """Files whose `stats_column` min/max overlap `[start, end)` and whose partition value lies in
    `[first_partition, last_partition]` (string order); files without statistics are kept.
    `actions` is the table's flattened add actions, when the caller already has them."""
    if actions is None:  # read as a stream: `pa.table()` on deltalake's Arrow object imports pandas
        actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
    root = table.table_uri.rstrip("/")
    count = actions.num_rows
    paths = actions.column("path").to_pylist()
    lows = _column(actions, f"min.{stats_column}", count) if stats_column else [None] * count
    highs = _column(actions, f"max.{stats_column}", count) if stats_column else [None] * count
    parts = _column(actions, f"partition.{partition_column}", count) if partition_column else [None] * count
    selected = []
    for path, low, high, part in zip(paths, lows, highs, parts):
        if end is not None and low is not None and _utc(low) >= end + slack:
            continue
        if start is not None and high is not None and _utc(high) < start - slack:
            continue
        if part is not None and first_partition is not None and part < first_partition:
            continue
        if part is not None and last_partition is not None and part > last_partition:
            continue
        # Log paths are URL-encoded (a ':' in a partition value is stored as %3A on disk, %253A in the log).
        path = unquote(path)
        selected.append(path if "://" in path or path.startswith("/") else f"{root}/{path}")
    return selected


def delta_dataset(table: DeltaTable, prune: list[tuple[str, str, Any]] | None = None) -> ds.Dataset:
    """The table as a pyarrow dataset (partition columns included, so filters on them prune files).

    `prune` (tuple filters such as `[("window_key", "in", keys)]`) drops files from the Delta log
    before the dataset is built: on a table of a thousand windows, reading one costs 3 ms this
    way and 200 ms by filtering a dataset of every file.

    Local tables are read through pyarrow's native filesystem: deltalake's default one is a
    Python filesystem, and after a scan through it the interpreter aborts at exit about one time in
    five ("terminate called without an active exception"). Remote tables keep deltalake's, which
    carries the storage options.
    """
    path = local_path(table.table_uri)
    filesystem = None if path is None else pafs.SubTreeFileSystem(path.rstrip("/") or "/", pafs.LocalFileSystem())
    return table.to_pyarrow_dataset(filesystem=filesystem, file_pruning_predicate=prune)


def child_folders(uri: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """The names of the folders directly under `uri`, sorted; none when it does not exist."""
    path = local_path(uri)
    if path is not None:  # pyarrow's own filesystem, not deltalake's (see delta_dataset)
        return sorted(e.name for e in os.scandir(path) if e.is_dir()) if os.path.isdir(path) else []
    from deltalake.fs import DeltaStorageHandler

    filesystem = pafs.PyFileSystem(DeltaStorageHandler(uri, storage_options or None))
    infos = filesystem.get_file_info(pafs.FileSelector("", recursive=False, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)


def local_path(uri: str) -> str | None:
    """The folder of a local path or `file:` URI (Spark writes `file:/...`, delta-rs
    `file:///...`); None for object-store URIs."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    return None if "://" in uri else uri


def read_delta(table: DeltaTable, columns: list[str] | None = None, filter: ds.Expression | None = None,
               prune: list[tuple[str, str, Any]] | None = None) -> pa.Table:
    """Rows of a Delta table (see `delta_dataset`)."""
    return delta_dataset(table, prune).to_table(columns=columns, filter=filter)


def read_rows(table: DeltaTable) -> list[dict[str, Any]]:
    """Every row of a small Delta table, as dicts with UTC datetimes (the window log). A local,
    unpartitioned table is read file by file with pyarrow.parquet and its times converted by
    `arrow_times`: pyarrow.dataset and pyarrow's own time conversion both import pandas, which
    would be a sixth of the time `featurestore status` takes. Other tables go through `read_delta`."""
    if (local_path(table.table_uri) is None or table.metadata().partition_columns
            or set(table.protocol().reader_features or []) & UNSUPPORTED_READER_FEATURES):
        return read_delta(table).to_pylist()
    names = [f.name for f in table.schema().fields]
    rows: list[dict[str, Any]] = []
    for uri in table.file_uris():
        part = pq.ParquetFile(local_path(uri)).read()
        columns = {name: arrow_times(column) if pa.types.is_timestamp(column.type) else column.to_pylist()
                   for name, column in zip(part.column_names, part.columns)}
        # Files written before a column was added (schema evolution) lack it: null there.
        rows += [{name: columns[name][i] if name in columns else None for name in names} for i in range(part.num_rows)]
    return rows


def _column(actions: pa.Table, name: str, rows: int) -> list:
    return actions.column(name).to_pylist() if name in actions.column_names else [None] * rows


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
