"""The offline store: one Delta table per feature set version, partitioned by window key.

Writes replace whole windows with a predicate overwrite, so a run is one atomic Delta commit
and windows it does not name are never touched.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from feature_pipelines.delta_files import read_delta
from feature_pipelines.dtypes import arrow_type
from feature_pipelines.errors import OfflineStoreError
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec import CREATED_COLUMN, WINDOW_KEY_COLUMN, FeatureSet


def offline_schema(feature_set: FeatureSet) -> pa.Schema:
    """The Arrow schema of a feature set's offline table."""
    fields = [pa.field(e.name, arrow_type(e.dtype), nullable=False) for e in feature_set.entities]
    fields.append(pa.field(feature_set.timestamp, arrow_type("timestamp"), nullable=False))
    fields += [pa.field(f.name, arrow_type(f.dtype)) for f in feature_set.features]
    fields.append(pa.field(WINDOW_KEY_COLUMN, pa.string(), nullable=False))
    fields.append(pa.field(CREATED_COLUMN, arrow_type("timestamp"), nullable=False))
    return pa.schema(fields)


@dataclass(frozen=True)
class DeltaOfflineStore:
    """Delta tables under `root`: `<root>/<name>/v<version>`."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def table_uri(self, feature_set: FeatureSet) -> str:
        return resolve_path(self.root, f"{feature_set.name}/v{feature_set.version}")

    def exists(self, feature_set: FeatureSet) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(feature_set), storage_options=self.storage_options or None)

    def table(self, feature_set: FeatureSet) -> DeltaTable:
        if not self.exists(feature_set):
            raise OfflineStoreError(
                f"feature set {feature_set.key} has no offline table at {self.table_uri(feature_set)}; "
                "materialize some windows first."
            )
        return DeltaTable(self.table_uri(feature_set), storage_options=self.storage_options or None)

    def window_log_uri(self, feature_set: FeatureSet) -> str:
        """A small Delta table recording every window written: the windows are known even when empty."""
        return resolve_path(self.root, f"_windows/{feature_set.name}/v{feature_set.version}")

    def replace_windows(
        self,
        feature_set: FeatureSet,
        batches: Iterable[pa.RecordBatch],
        window_keys: Iterable[str],
        commit_metadata: dict[str, str] | None = None,
        rows_per_window: dict[str, int] | None = None,
    ) -> int:
        """Replace exactly `window_keys` with `batches`, in one commit; return the new table version.

        The window log is appended after the data commit: a crash in between leaves windows
        that hold data but read as missing, which a re-run repairs; never the reverse.
        """
        keys = sorted(set(window_keys))
        if not keys:
            raise OfflineStoreError(f"feature set {feature_set.key}: no windows given to replace.")
        schema = offline_schema(feature_set)
        reader = pa.RecordBatchReader.from_batches(schema, _conformed(batches, schema))
        uri = self.table_uri(feature_set)
        metadata = {"feature_set": feature_set.key, "windows": json.dumps(keys), **(commit_metadata or {})}
        options = self.storage_options or None
        try:
            if self.exists(feature_set):
                self._check_schema(feature_set, schema)
                write_deltalake(
                    uri,
                    reader,
                    mode="overwrite",
                    predicate=f"{WINDOW_KEY_COLUMN} IN ({', '.join(_quote(k) for k in keys)})",
                    partition_by=[WINDOW_KEY_COLUMN],
                    storage_options=options,
                    commit_properties=CommitProperties(custom_metadata=metadata),
                )
            else:
                write_deltalake(
                    uri,
                    reader,
                    mode="append",
                    partition_by=[WINDOW_KEY_COLUMN],
                    name=feature_set.key,
                    description=feature_set.description or None,
                    storage_options=options,
                    commit_properties=CommitProperties(custom_metadata=metadata),
                )
        except DeltaError as exc:
            raise OfflineStoreError(
                f"feature set {feature_set.key}: writing windows {keys[0]}..{keys[-1]} to {uri} failed: {exc}. "
                "The table is unchanged; fix the cause and re-run."
            ) from exc
        version = DeltaTable(uri, storage_options=options).version()
        self._log_windows(feature_set, keys, rows_per_window or {}, version, metadata)
        return version

    def _log_windows(
        self, feature_set: FeatureSet, keys: list[str], rows: dict[str, int], version: int, metadata: dict[str, str]
    ) -> None:
        now = datetime.now(timezone.utc)
        log = pa.table(
            {
                WINDOW_KEY_COLUMN: pa.array(keys, pa.string()),
                "rows": pa.array([rows.get(k, 0) for k in keys], pa.int64()),
                "table_version": pa.array([version] * len(keys), pa.int64()),
                "run_id": pa.array([metadata.get("run_id", "")] * len(keys), pa.string()),
                "materialized_at": pa.array([now] * len(keys), arrow_type("timestamp")),
            }
        )
        write_deltalake(self.window_log_uri(feature_set), log, mode="append", storage_options=self.storage_options or None)

    def delete_windows(self, feature_set: FeatureSet, window_keys: Iterable[str]) -> None:
        """Remove windows: first from the window log (they read as missing), then their rows, so
        a crash in between never leaves a window marked materialized without its data."""
        keys = sorted(set(window_keys))
        if not keys:
            return
        predicate = f"{WINDOW_KEY_COLUMN} IN ({', '.join(_quote(k) for k in keys)})"
        options = self.storage_options or None
        log_uri = self.window_log_uri(feature_set)
        if DeltaTable.is_deltatable(log_uri, storage_options=options):
            DeltaTable(log_uri, storage_options=options).delete(predicate)
        if self.exists(feature_set):
            self.table(feature_set).delete(predicate)

    def materialized_windows(self, feature_set: FeatureSet) -> dict[str, dict]:
        """Every window ever written, with its latest row count, table version and time."""
        uri = self.window_log_uri(feature_set)
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options or None):
            return {}
        log = read_delta(DeltaTable(uri, storage_options=self.storage_options or None)).to_pylist()
        latest: dict[str, dict] = {}
        for entry in sorted(log, key=lambda e: (e["table_version"], e["materialized_at"])):
            latest[entry[WINDOW_KEY_COLUMN]] = entry
        return latest

    def _check_schema(self, feature_set: FeatureSet, expected: pa.Schema) -> None:
        actual = pa.schema(self.table(feature_set).schema().to_arrow())
        if [(f.name, f.type) for f in actual] != [(f.name, f.type) for f in expected]:
            raise OfflineStoreError(
                f"feature set {feature_set.key}: the offline table at {self.table_uri(feature_set)} was written "
                f"with columns {actual.names} but the spec now gives {expected.names}. A materialized version "
                f"is immutable: declare the change as version {feature_set.version + 1}."
            )

    def window_keys(self, feature_set: FeatureSet) -> list[str]:
        """The windows present in the table (those holding at least one row)."""
        if not self.exists(feature_set):
            return []
        partitions = self.table(feature_set).partitions()
        return sorted({p[WINDOW_KEY_COLUMN] for p in partitions})

    def read(self, feature_set: FeatureSet, window_keys: Iterable[str] | None = None) -> pa.Table:
        """Rows of the table, optionally only those of `window_keys`."""
        table = self.table(feature_set)
        if window_keys is None:
            return read_delta(table)
        keys = list(window_keys)
        if not keys:
            return offline_schema(feature_set).empty_table()
        return read_delta(table, filter=pc.field(WINDOW_KEY_COLUMN).isin(keys))


def _conformed(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        columns = [batch.column(name).cast(field.type) for name, field in zip(schema.names, schema)]
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
