"""The offline store: one Delta table per feature set version, partitioned by window key.

Writes replace whole windows with a predicate overwrite, so a run is one atomic Delta commit
and windows it does not name are never touched. Each commit names the windows it wrote or
deleted; the window log beside the table (`window_log.py`) is kept up to date from them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction

from feature_pipelines.stores.offline.delta_files import (
    child_folders, find_table, local_path, open_table, read_delta, table_exists,
)
from feature_pipelines.stores.offline.window_log import (
    CHECKS_FAILED, CHECKS_PASSED, WindowLog, deleted_metadata, written_metadata,
)
from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.errors import OfflineStoreError, VersionConflictError, inline
from feature_pipelines.faults import OFFLINE_AFTER_COMMIT, OFFLINE_MID_WRITE, fault_point
from feature_pipelines.spec.fingerprint import DEFINITION_PROPERTY, FINGERPRINT_PROPERTY, changed_fields, definition, fingerprint
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.feature_set import CREATED_COLUMN, WINDOW_KEY_COLUMN, FeatureSet, Versioned, VersionRef


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
    """Delta tables under `root`: `<root>/<name>/v<version>`, and each version's window log.

    Where a version's data lives, its window log and retiring it need only its name and number
    (`VersionRef`); reading and writing rows go through `open`, which checks the spec."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def table_uri(self, ref: Versioned) -> str:
        """Where a version's table lives; known without its spec (for retiring undeclared versions)."""
        return resolve_path(self.root, f"{ref.name}/v{ref.version}")

    def window_log_uri(self, ref: Versioned) -> str:
        """A small Delta table recording every window written: the windows are known even when empty."""
        return resolve_path(self.root, f"_windows/{ref.name}/v{ref.version}")

    def window_log(self, ref: Versioned) -> WindowLog:
        return WindowLog(self.window_log_uri(ref), self.storage_options)

    def exists(self, ref: Versioned) -> bool:
        return table_exists(self.table_uri(ref), self.storage_options)

    def stored_versions(self) -> list[VersionRef]:
        """Every version with a table or a window log under the root, declared or not (from the
        folder names `<name>/v<version>` and `_windows/<name>/v<version>`), sorted."""
        found = set()
        for base in (self.root, resolve_path(self.root, "_windows")):
            for name in child_folders(base, self.storage_options):
                if name.startswith("_"):
                    continue
                found |= {VersionRef(name, int(v[1:])) for v in child_folders(resolve_path(base, name), self.storage_options)
                          if v[:1] == "v" and v[1:].isdigit()}
        return sorted(found, key=lambda ref: (ref.name, ref.version))

    def open(self, feature_set: FeatureSet) -> OfflineTable:
        """The version's table, opened once and refused when the spec no longer matches the
        definition it was materialized with (every read and write comes through here)."""
        table = find_table(self.table_uri(feature_set), self.storage_options)
        if table is not None:
            _check_pinned(table, feature_set)
        return OfflineTable(self, feature_set, table)

    def _create(self, feature_set: FeatureSet) -> DeltaTable:
        """An empty table pinned to the spec's definition, before any data is written to it."""
        table = DeltaTable.create(
            self.table_uri(feature_set), offline_schema(feature_set), partition_by=[WINDOW_KEY_COLUMN],
            name=feature_set.key, description=feature_set.description or None,
            storage_options=self.storage_options or None,
        )
        _pin(table, feature_set)
        return table

    def record_checks(self, ref: Versioned, window_keys: Iterable[str],
                      failed: Mapping[str, Sequence[str]] | None = None) -> None:
        """Record the blocking checks' verdict on windows just written. A window `failed` names
        (window -> the blocking checks it failed) is quarantined: never published online by repair
        (see `publishable_windows`) and refused by retrieval unless accepted; the others passed.
        The verdict replaces the window's earlier one, so a re-run that passes lifts a quarantine."""
        logged = self.materialized_windows(ref)
        now = datetime.now(timezone.utc)
        failed = failed or {}
        entries = [
            {**logged[k], "materialized_at": now, "checks": CHECKS_FAILED if failed.get(k) else CHECKS_PASSED,
             "failed_checks": list(failed[k]) if failed.get(k) else None}
            for k in sorted(set(window_keys)) if k in logged
        ]
        if entries:
            self.window_log(ref).append(entries)

    def publishable_windows(self, ref: Versioned) -> list[str]:
        """Windows written whose blocking checks passed (or that predate check records)."""
        return sorted(k for k, e in self.materialized_windows(ref).items()
                      if e.get("checks") in (CHECKS_PASSED, None))

    def materialized_windows(self, ref: Versioned) -> dict[str, dict]:
        """Every window the table holds, with its latest row count, table version, run, time,
        checks verdict and failed checks (from the window log, first caught up with the table's
        commits when they are ahead of it; the version need not be declared)."""
        return self.window_log(ref).windows(find_table(self.table_uri(ref), self.storage_options))

    def sync_window_log(self, ref: Versioned) -> None:
        """Bring the window log up to the table's latest commit (see `window_log.py`)."""
        table = find_table(self.table_uri(ref), self.storage_options)
        if table is not None:
            self.window_log(ref).sync(table)

    def delete_version(self, ref: Versioned) -> None:
        """Delete a version's window log, then its table (a crash in between leaves a table whose
        windows a reader logs again, pending, until the retry). Local folders are removed; on an
        object store every row is deleted and vacuumed at once, leaving only an empty Delta log."""
        for uri in (self.window_log_uri(ref), self.table_uri(ref)):
            if not table_exists(uri, self.storage_options):
                continue
            path = local_path(uri)
            if path is not None:
                shutil.rmtree(path)
                continue
            table = open_table(uri, self.storage_options)
            table.delete()
            table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)


class OfflineTable:
    """A feature set version's offline table as one run sees it: opened and checked against the
    spec once (`DeltaOfflineStore.open`), missing until the first write creates it.

    A run writes, checks and reads its windows through one of these, so the table's log and
    pinned definition are read once per run rather than once per step."""

    def __init__(self, store: DeltaOfflineStore, feature_set: FeatureSet, table: DeltaTable | None):
        self.store = store
        self.feature_set = feature_set
        self._table = table

    @property
    def uri(self) -> str:
        return self.store.table_uri(self.feature_set)

    @property
    def exists(self) -> bool:
        return self._table is not None

    @property
    def delta(self) -> DeltaTable:
        """The Delta table; refused when no windows were ever written."""
        if self._table is None:
            raise OfflineStoreError(
                f"feature set {self.feature_set.key} has no offline table at {self.uri}; "
                "materialize some windows first."
            )
        return self._table

    def columns(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(column, type) of the table as stored, and as the spec gives them."""
        actual = [(f.name, str(f.type)) for f in pa.schema(self.delta.schema().to_arrow())]
        return actual, [(f.name, str(f.type)) for f in offline_schema(self.feature_set)]

    def window_keys(self) -> list[str]:
        """The windows present in the table (those holding at least one row)."""
        if self._table is None:
            return []
        return sorted({p[WINDOW_KEY_COLUMN] for p in self._table.partitions()})

    def read(self, window_keys: Iterable[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of the table, optionally only those of `window_keys`, optionally only `columns`."""
        table = self.delta
        if window_keys is None:
            return read_delta(table, columns=columns)
        keys = list(window_keys)
        if not keys:
            empty = offline_schema(self.feature_set).empty_table()
            return empty if columns is None else empty.select(columns)
        return read_delta(table, columns=columns, filter=pc.field(WINDOW_KEY_COLUMN).isin(keys),
                          prune=[(WINDOW_KEY_COLUMN, "in", keys)])

    def replace_windows(
        self,
        batches: Iterable[pa.RecordBatch],
        window_keys: Iterable[str],
        commit_metadata: dict[str, str] | None = None,
        rows_per_window: dict[str, int] | None = None,
    ) -> int:
        """Replace exactly `window_keys` with Arrow `batches`, written by delta-rs from this
        process, in one commit; return the new table version."""
        schema = offline_schema(self.feature_set)
        reader = pa.RecordBatchReader.from_batches(schema, _conformed(batches, schema))

        def write(table: DeltaTable, predicate: str, keys: list[str], metadata: dict[str, str]) -> None:
            write_deltalake(
                table, reader, mode="overwrite", predicate=predicate, partition_by=[WINDOW_KEY_COLUMN],
                commit_properties=CommitProperties(custom_metadata=metadata),
            )

        return self._replace(window_keys, write, commit_metadata, rows_per_window)

    def commit_files(
        self,
        actions: list[AddAction],
        window_keys: Iterable[str],
        commit_metadata: dict[str, str] | None = None,
        rows_per_window: dict[str, int] | None = None,
    ) -> int:
        """Replace exactly `window_keys` with Parquet files already written into the table's
        location (by Spark executors, see `spark_delta_write`), in one commit; return the new
        table version. Only the files' descriptions pass through this process."""
        schema = offline_schema(self.feature_set)

        def write(table: DeltaTable, predicate: str, keys: list[str], metadata: dict[str, str]) -> None:
            fault_point(OFFLINE_MID_WRITE)  # the files are in place, nothing is committed
            table.create_write_transaction(
                actions, mode="overwrite", schema=schema, partition_by=[WINDOW_KEY_COLUMN],
                partition_filters=[(WINDOW_KEY_COLUMN, "in", keys)],
                commit_properties=CommitProperties(custom_metadata=metadata),
            )

        return self._replace(window_keys, write, commit_metadata, rows_per_window)

    def delete_windows(self, window_keys: Iterable[str]) -> None:
        """Remove windows: one commit replaces them with no rows and names them as deleted, then
        the window log catches up and drops them (a crash in between is caught up by the next
        reader, so they never read as materialized without their data)."""
        keys = sorted(set(window_keys))
        if not keys or self._table is None:
            return
        table = self._latest()
        # An overwrite rather than a DELETE: it commits even for windows holding no rows.
        write_deltalake(
            table, offline_schema(self.feature_set).empty_table(), mode="overwrite", partition_by=[WINDOW_KEY_COLUMN],
            predicate=f"{WINDOW_KEY_COLUMN} IN ({', '.join(_quote(k) for k in keys)})",
            commit_properties=CommitProperties(custom_metadata=deleted_metadata(keys)),
        )
        table.update_incremental()
        self.store.window_log(self.feature_set).sync(table)

    def _replace(
        self,
        window_keys: Iterable[str],
        write: Callable[[DeltaTable, str, list[str], dict[str, str]], None],
        commit_metadata: dict[str, str] | None,
        rows_per_window: dict[str, int] | None,
    ) -> int:
        """Create and pin the table when new, check it, run `write` (one commit replacing the
        windows and naming them with their row counts in its commitInfo), then log the windows.
        """
        feature_set = self.feature_set
        keys = sorted(set(window_keys))
        if not keys:
            raise OfflineStoreError(f"feature set {feature_set.key}: no windows given to replace.")
        metadata = {"feature_set": feature_set.key, **(commit_metadata or {}), **written_metadata(keys, rows_per_window)}
        try:
            table = self._latest()
            self._check_schema()  # before adopting an unpinned table: never pin a mismatch
            if FINGERPRINT_PROPERTY not in table.metadata().configuration:
                _pin(table, feature_set)  # written before versions were pinned, or created by a run that died
            write(table, f"{WINDOW_KEY_COLUMN} IN ({', '.join(_quote(k) for k in keys)})", keys, metadata)
        except DeltaError as exc:
            raise OfflineStoreError(
                f"feature set {feature_set.key}: writing windows {keys[0]}..{keys[-1]} to {self.uri} failed: {inline(exc)}. "
                "The table is unchanged; fix the cause and re-run."
            ) from exc
        table.update_incremental()  # to the commit just made (a file commit does not move the object)
        version = table.version()
        # The window log follows the commit, not in its transaction: a crash here leaves the log
        # behind the table, and whoever reads or writes it next logs these windows from the
        # commit's commitInfo (checks pending, so repair never publishes them unchecked).
        fault_point(OFFLINE_AFTER_COMMIT)
        self.store.window_log(feature_set).sync(table)
        return version

    def _latest(self) -> DeltaTable:
        """The table at its newest version, created and pinned when no run wrote it yet. Its pin
        is checked again only when another writer committed since it was opened."""
        opened = None if self._table is None else self._table.version()
        if self._table is None:
            self._table = find_table(self.uri, self.store.storage_options)
        else:
            self._table.update_incremental()
        if self._table is None:
            self._table = self.store._create(self.feature_set)
        elif self._table.version() != opened:
            _check_pinned(self._table, self.feature_set)
        return self._table

    def _check_schema(self) -> None:
        actual, expected = self.columns()
        if actual != expected:
            raise OfflineStoreError(
                f"feature set {self.feature_set.key}: the offline table at {self.uri} was written with columns "
                f"{[name for name, _ in actual]} but the spec now gives {[name for name, _ in expected]}. "
                f"A materialized version is immutable: declare the change as version {self.feature_set.version + 1}."
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
