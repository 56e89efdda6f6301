"""The offline store: one Delta table per feature set version, partitioned by window key.

Writes replace whole windows with a predicate overwrite, so a run is one atomic Delta commit
and windows it does not name are never touched.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction

from feature_pipelines.stores.offline.delta_files import local_path, read_delta
from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.errors import OfflineStoreError, VersionConflictError
from feature_pipelines.faults import OFFLINE_MID_WRITE, fault_point
from feature_pipelines.spec.fingerprint import DEFINITION_PROPERTY, FINGERPRINT_PROPERTY, changed_fields, definition, fingerprint
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.feature_set import CREATED_COLUMN, WINDOW_KEY_COLUMN, FeatureSet


# A window's blocking-check verdict in the window log: written as pending with the data, then
# passed or failed once the checks ran. A crash in between leaves it pending: never published
# by repair until a run re-checks it.
CHECKS_PENDING, CHECKS_PASSED, CHECKS_FAILED = "pending", "passed", "failed"


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
        return self.version_uri(feature_set.name, feature_set.version)

    def version_uri(self, name: str, version: int) -> str:
        """Where a version's table lives; known without its spec (for retiring undeclared versions)."""
        return resolve_path(self.root, f"{name}/v{version}")

    def version_log_uri(self, name: str, version: int) -> str:
        return resolve_path(self.root, f"_windows/{name}/v{version}")

    def exists(self, feature_set: FeatureSet) -> bool:
        return self.version_exists(feature_set.name, feature_set.version)

    def version_exists(self, name: str, version: int) -> bool:
        return DeltaTable.is_deltatable(self.version_uri(name, version), storage_options=self.storage_options or None)

    def table(self, feature_set: FeatureSet) -> DeltaTable:
        """The version's table, refused when the spec no longer matches the definition it was
        materialized with (every read and write comes through here)."""
        if not self.exists(feature_set):
            raise OfflineStoreError(
                f"feature set {feature_set.key} has no offline table at {self.table_uri(feature_set)}; "
                "materialize some windows first."
            )
        table = DeltaTable(self.table_uri(feature_set), storage_options=self.storage_options or None)
        _check_pinned(table, feature_set)
        return table

    def check_definition(self, feature_set: FeatureSet) -> None:
        """Raise VersionConflictError if this version was materialized with another definition."""
        if self.exists(feature_set):
            self.table(feature_set)

    def _create(self, feature_set: FeatureSet, schema: pa.Schema) -> None:
        """An empty table pinned to the spec's definition, before any data is written to it."""
        table = DeltaTable.create(
            self.table_uri(feature_set), schema, partition_by=[WINDOW_KEY_COLUMN], name=feature_set.key,
            description=feature_set.description or None, storage_options=self.storage_options or None,
        )
        _pin(table, feature_set)

    def window_log_uri(self, feature_set: FeatureSet) -> str:
        """A small Delta table recording every window written: the windows are known even when empty."""
        return self.version_log_uri(feature_set.name, feature_set.version)

    def replace_windows(
        self,
        feature_set: FeatureSet,
        batches: Iterable[pa.RecordBatch],
        window_keys: Iterable[str],
        commit_metadata: dict[str, str] | None = None,
        rows_per_window: dict[str, int] | None = None,
    ) -> int:
        """Replace exactly `window_keys` with Arrow `batches`, written by delta-rs from this
        process, in one commit; return the new table version."""
        schema = offline_schema(feature_set)
        reader = pa.RecordBatchReader.from_batches(schema, _conformed(batches, schema))

        def write(table: DeltaTable, predicate: str, keys: list[str], metadata: dict[str, str]) -> None:
            write_deltalake(
                table, reader, mode="overwrite", predicate=predicate, partition_by=[WINDOW_KEY_COLUMN],
                commit_properties=CommitProperties(custom_metadata=metadata),
            )

        return self._replace(feature_set, window_keys, write, commit_metadata, rows_per_window)

    def commit_files(
        self,
        feature_set: FeatureSet,
        actions: list[AddAction],
        window_keys: Iterable[str],
        commit_metadata: dict[str, str] | None = None,
        rows_per_window: dict[str, int] | None = None,
    ) -> int:
        """Replace exactly `window_keys` with Parquet files already written into the table's
        location (by Spark executors, see `spark_delta_write`), in one commit; return the new
        table version. Only the files' descriptions pass through this process."""
        schema = offline_schema(feature_set)

        def write(table: DeltaTable, predicate: str, keys: list[str], metadata: dict[str, str]) -> None:
            fault_point(OFFLINE_MID_WRITE)  # the files are in place, nothing is committed
            table.create_write_transaction(
                actions, mode="overwrite", schema=schema, partition_by=[WINDOW_KEY_COLUMN],
                partition_filters=[(WINDOW_KEY_COLUMN, "in", keys)],
                commit_properties=CommitProperties(custom_metadata=metadata),
            )

        return self._replace(feature_set, window_keys, write, commit_metadata, rows_per_window)

    def _replace(
        self,
        feature_set: FeatureSet,
        window_keys: Iterable[str],
        write: Callable[[DeltaTable, str, list[str], dict[str, str]], None],
        commit_metadata: dict[str, str] | None,
        rows_per_window: dict[str, int] | None,
    ) -> int:
        """Create and pin the table when new, check it, run `write` (one commit replacing the
        windows), then log the windows.

        The window log is appended after the data commit: a crash in between leaves windows
        that hold data but read as missing, which a re-run repairs; never the reverse.
        """
        keys = sorted(set(window_keys))
        if not keys:
            raise OfflineStoreError(f"feature set {feature_set.key}: no windows given to replace.")
        uri = self.table_uri(feature_set)
        metadata = {"feature_set": feature_set.key, "windows": json.dumps(keys), **(commit_metadata or {})}
        try:
            if not self.exists(feature_set):
                self._create(feature_set, offline_schema(feature_set))
            table = self.table(feature_set)
            _check_schema(table, feature_set, uri)  # before adopting an unpinned table: never pin a mismatch
            if FINGERPRINT_PROPERTY not in table.metadata().configuration:
                _pin(table, feature_set)  # written before versions were pinned, or created by a run that died
                table = self.table(feature_set)
            write(table, f"{WINDOW_KEY_COLUMN} IN ({', '.join(_quote(k) for k in keys)})", keys, metadata)
        except DeltaError as exc:
            raise OfflineStoreError(
                f"feature set {feature_set.key}: writing windows {keys[0]}..{keys[-1]} to {uri} failed: {exc}. "
                "The table is unchanged; fix the cause and re-run."
            ) from exc
        version = DeltaTable(uri, storage_options=self.storage_options or None).version()
        self._log_windows(feature_set, keys, rows_per_window or {}, version, metadata)
        return version

    def _log_windows(
        self, feature_set: FeatureSet, keys: list[str], rows: dict[str, int], version: int, metadata: dict[str, str],
        checks: str = CHECKS_PENDING,
    ) -> None:
        now = datetime.now(timezone.utc)
        log = pa.table(
            {
                WINDOW_KEY_COLUMN: pa.array(keys, pa.string()),
                "rows": pa.array([rows.get(k, 0) for k in keys], pa.int64()),
                "table_version": pa.array([version] * len(keys), pa.int64()),
                "run_id": pa.array([metadata.get("run_id", "")] * len(keys), pa.string()),
                "materialized_at": pa.array([now] * len(keys), arrow_type("timestamp")),
                "checks": pa.array([checks] * len(keys), pa.string()),
            }
        )
        # schema_mode="merge": logs written before the `checks` column existed gain it (null there).
        write_deltalake(self.window_log_uri(feature_set), log, mode="append", schema_mode="merge",
                        storage_options=self.storage_options or None)

    def record_checks(self, feature_set: FeatureSet, window_keys: Iterable[str], passed: bool) -> None:
        """Record the blocking checks' verdict on windows just written: only windows whose checks
        passed are ever published online by repair (see `publishable_windows`)."""
        logged = self.materialized_windows(feature_set)
        keys = [k for k in sorted(set(window_keys)) if k in logged]
        for version in sorted({logged[k]["table_version"] for k in keys}):
            batch = [k for k in keys if logged[k]["table_version"] == version]
            self._log_windows(feature_set, batch, {k: logged[k]["rows"] for k in batch}, version,
                              {"run_id": logged[batch[0]]["run_id"]}, CHECKS_PASSED if passed else CHECKS_FAILED)

    def publishable_windows(self, feature_set: FeatureSet) -> list[str]:
        """Windows written whose blocking checks passed (or that predate check records)."""
        return sorted(k for k, e in self.materialized_windows(feature_set).items()
                      if e.get("checks") in (CHECKS_PASSED, None))

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
        return self.logged_windows(feature_set.name, feature_set.version)

    def logged_windows(self, name: str, version: int) -> dict[str, dict]:
        """`materialized_windows` of a version known only by name (it may no longer be declared)."""
        uri = self.version_log_uri(name, version)
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options or None):
            return {}
        log = read_delta(DeltaTable(uri, storage_options=self.storage_options or None)).to_pylist()
        latest: dict[str, dict] = {}
        for entry in sorted(log, key=lambda e: (e["table_version"], e["materialized_at"])):
            latest[entry[WINDOW_KEY_COLUMN]] = entry
        return latest

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version's window log, then its table. Local folders are removed; on an object
        store every row is deleted and vacuumed at once, leaving only an empty Delta log."""
        for uri in (self.version_log_uri(name, version), self.version_uri(name, version)):
            if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options or None):
                continue
            path = local_path(uri)
            if path is not None:
                shutil.rmtree(path)
                continue
            table = DeltaTable(uri, storage_options=self.storage_options or None)
            table.delete()
            table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)

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
        return read_delta(table, filter=pc.field(WINDOW_KEY_COLUMN).isin(keys), prune=[(WINDOW_KEY_COLUMN, "in", keys)])


def table_columns(table: DeltaTable, feature_set: FeatureSet) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(column, type) of the table as stored, and as the spec gives them."""
    actual = [(f.name, str(f.type)) for f in pa.schema(table.schema().to_arrow())]
    return actual, [(f.name, str(f.type)) for f in offline_schema(feature_set)]


def _check_schema(table: DeltaTable, feature_set: FeatureSet, uri: str) -> None:
    actual, expected = table_columns(table, feature_set)
    if actual != expected:
        raise OfflineStoreError(
            f"feature set {feature_set.key}: the offline table at {uri} was written with columns "
            f"{[name for name, _ in actual]} but the spec now gives {[name for name, _ in expected]}. "
            f"A materialized version is immutable: declare the change as version {feature_set.version + 1}."
        )


def _pin(table: DeltaTable, feature_set: FeatureSet) -> None:
    table.alter.set_table_properties(
        {FINGERPRINT_PROPERTY: fingerprint(feature_set), DEFINITION_PROPERTY: json.dumps(definition(feature_set))},
        raise_if_not_exists=False,
    )


def _check_pinned(table: DeltaTable, feature_set: FeatureSet) -> None:
    config = table.metadata().configuration
    pinned = config.get(FINGERPRINT_PROPERTY)
    if pinned is None or pinned == fingerprint(feature_set):
        return
    try:
        changed = changed_fields(json.loads(config.get(DEFINITION_PROPERTY, "{}")), feature_set)
    except ValueError:
        changed = []
    raise VersionConflictError(
        f"feature set {feature_set.key} was materialized with another definition "
        f"(changed: {', '.join(changed) or 'unknown'}; fingerprint {pinned}, now {fingerprint(feature_set)}). "
        f"A materialized version is immutable: declare the change as version {feature_set.version + 1} "
        f"(version {feature_set.version} stays readable side by side until you retire it with "
        f"`featurestore retire {feature_set.name} --version {feature_set.version}`), or restore the "
        "old definition."
    )


def _conformed(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        columns = [batch.column(name).cast(field.type) for name, field in zip(schema.names, schema)]
        yield pa.RecordBatch.from_arrays(columns, schema=schema)
        fault_point(OFFLINE_MID_WRITE)  # the writer holds a batch; nothing is committed yet


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
