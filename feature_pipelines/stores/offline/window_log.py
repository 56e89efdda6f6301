"""The window log: which windows a feature set version's table holds, with each window's rows,
run, time and blocking-check verdict (with the names of the blocking checks it failed), in a small
Delta table beside it (`_windows/<name>/v<N>`).

The table's own commits are the truth. A commit that writes windows names them and their row
counts in its commitInfo (`written_metadata`); one that deletes windows names those
(`deleted_metadata`). The log caches what those commits say, plus the verdicts recorded after
the checks ran, and accounts for the table up to the newest `table_version` among its rows.
When the table is ahead (a process killed between a commit and its log entry, or commits that
touch no window: pinning, compaction, vacuum), the missing commits' commitInfo is read and the
log caught up (`WindowLog.sync`, also on every read). So no crash point makes the log and the
data disagree: a window committed by a run that died before logging it counts as materialized
with checks `pending`, never published online until a run re-checks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from feature_pipelines.errors import OfflineStoreError
from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.spec.feature_set import WINDOW_KEY_COLUMN
from feature_pipelines.stores.offline.delta_files import find_table, read_rows

# A window's blocking-check verdict: pending with the data, then passed or failed once the checks
# ran. A crash in between leaves it pending: never published by repair until a run re-checks it.
# A failed window is quarantined (never published, refused by retrieval unless accepted); its
# entry's `failed_checks` names the checks, and a later verdict on new data replaces it.
CHECKS_PENDING, CHECKS_PASSED, CHECKS_FAILED = "pending", "passed", "failed"

# commitInfo keys of the table's commits (JSON values): the windows a commit replaced, their
# row counts, and the windows a commit deleted.
WRITTEN, ROWS, DELETED = "windows", "rows", "deleted_windows"

LOG_SCHEMA = pa.schema([
    pa.field(WINDOW_KEY_COLUMN, pa.string()),  # null on a mark row: "the table is read up to table_version"
    pa.field("rows", pa.int64()),
    pa.field("table_version", pa.int64()),
    pa.field("run_id", pa.string()),
    pa.field("materialized_at", arrow_type("timestamp")),
    pa.field("checks", pa.string()),
    pa.field("failed_checks", pa.list_(pa.string())),  # with a failed verdict only
])

_RETRIES = 5


def written_metadata(keys: list[str], rows: Mapping[str, int] | None) -> dict[str, str]:
    """commitInfo for a commit replacing `keys` (row counts left out when unknown: the log then
    counts the windows' files when it reads the commit)."""
    metadata = {WRITTEN: json.dumps(keys)}
    if rows is not None:
        metadata[ROWS] = json.dumps({k: int(rows.get(k, 0)) for k in keys})
    return metadata


def deleted_metadata(keys: list[str]) -> dict[str, str]:
    """commitInfo for a commit deleting `keys`."""
    return {DELETED: json.dumps(keys)}


def latest_entries(rows: Iterable[Mapping]) -> dict[str, dict]:
    """Each window's newest log entry: highest table version; at the same version a verdict
    outranks `pending` (a catch-up racing the verdict may append `pending` after it). A failed
    verdict's `failed_checks` is always a list of check names: empty in logs written before the
    names were recorded (they lack the column); other entries have none."""
    latest: dict[str, dict] = {}
    entries = (dict(r) for r in rows if r[WINDOW_KEY_COLUMN] is not None)
    for entry in sorted(entries, key=lambda e: (e["table_version"], e.get("checks") != CHECKS_PENDING,
                                                e["materialized_at"])):
        latest[entry[WINDOW_KEY_COLUMN]] = entry
    for entry in latest.values():
        if entry.get("checks") == CHECKS_FAILED:
            entry["failed_checks"] = list(entry.get("failed_checks") or [])
    return latest


@dataclass
class _CatchUp:
    """What the log lacks to account for the table up to `version`."""

    version: int
    logged_through: int
    added: dict[str, dict] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def applied(self, rows: list[dict]) -> list[dict]:
        kept = [r for r in rows if r[WINDOW_KEY_COLUMN] not in self.removed]
        return kept + list(self.added.values())


@dataclass(frozen=True)
class WindowLog:
    """One version's window log at `uri`."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def windows(self, table: DeltaTable | None) -> dict[str, dict]:
        """Every window written (its newest entry), the log first caught up with `table` (the
        version's table at its latest version; None when there is none)."""
        rows = self._rows()
        catch_up = None if table is None else _catch_up(table, rows)
        if catch_up is None:
            return latest_entries(rows)
        try:
            self._apply(catch_up, rows)
        except (DeltaError, OSError):
            pass  # a reader that may not write the log still gets the right answer; a writer records it
        return latest_entries(catch_up.applied(rows))

    def sync(self, table: DeltaTable) -> None:
        """Catch the log up with `table` (at its latest version); failures are raised."""
        rows = self._rows()
        catch_up = _catch_up(table, rows)
        if catch_up is not None:
            self._apply(catch_up, rows)

    def append(self, entries: list[dict]) -> None:
        """Append entries (dicts with the log's columns) in one commit."""
        rows = pa.Table.from_pylist([{f.name: e.get(f.name) for f in LOG_SCHEMA} for e in entries], LOG_SCHEMA)
        # schema_mode="merge": logs written before the `checks` or `failed_checks` column existed
        # gain it (null there).
        write_deltalake(self.uri, rows, mode="append", schema_mode="merge", storage_options=self.storage_options or None)

    def _rows(self) -> list[dict]:
        log = find_table(self.uri, self.storage_options)
        return [] if log is None else read_rows(log)

    def _apply(self, catch_up: _CatchUp, rows: list[dict]) -> None:
        """Drop the entries of deleted windows, then append the new ones and, when they do not
        reach the table's version, a mark row saying the log is read up to it. A crash between
        the two only repeats the catch-up. No log is started just for a mark row (a table whose
        every row was deleted: a retired version on an object store)."""
        if catch_up.removed:
            keys = ", ".join("'" + k.replace("'", "''") + "'" for k in sorted(catch_up.removed))
            # Entries a concurrent writer appended since (for newer versions) stay.
            find_table(self.uri, self.storage_options).delete(
                f"{WINDOW_KEY_COLUMN} IN ({keys}) AND table_version <= {catch_up.logged_through}")
        entries = list(catch_up.added.values())
        if not entries and not rows:
            return
        if max((e["table_version"] for e in entries), default=-1) < catch_up.version:
            entries.append({WINDOW_KEY_COLUMN: None, "rows": 0, "table_version": catch_up.version, "run_id": "",
                            "materialized_at": datetime.now(timezone.utc)})
        self.append(entries)


def _catch_up(table: DeltaTable, rows: list[dict]) -> _CatchUp | None:
    """What the log lacks for the table's commits after the newest version it accounts for;
    None in the common case, when it lacks nothing (one version comparison)."""
    logged_through = max((r["table_version"] for r in rows), default=-1)
    if table.version() <= logged_through:
        return None
    commits = _commits_after(table, logged_through)
    catch_up = _CatchUp(table.version(), logged_through)
    logged = latest_entries(rows)
    for commit in commits:
        if WRITTEN in commit:
            counts = json.loads(commit[ROWS]) if ROWS in commit else {}
            for key in json.loads(commit[WRITTEN]):
                catch_up.removed.discard(key)
                catch_up.added[key] = {
                    WINDOW_KEY_COLUMN: key, "rows": counts.get(key), "table_version": commit["version"],
                    "run_id": commit.get("run_id", ""), "checks": CHECKS_PENDING,
                    "materialized_at": datetime.fromtimestamp(commit["timestamp"] / 1000, timezone.utc),
                }
        for key in _deleted(commit, set(logged) | set(catch_up.added)):
            catch_up.added.pop(key, None)
            if key in logged:
                catch_up.removed.add(key)
    _check_partitions(table, catch_up, logged)
    return catch_up


def _deleted(commit: Mapping, known: set[str]) -> Iterable[str]:
    """The windows a commit deleted: those it names, or every one for a delete of the whole table
    (retiring a version on an object store). Other deletes name none (see `_check_partitions`)."""
    if DELETED in commit:
        return json.loads(commit[DELETED])
    if commit.get("operation") == "DELETE" and "predicate" not in commit.get("operationParameters", {}):
        return known
    return ()


def _check_partitions(table: DeltaTable, catch_up: _CatchUp, logged: dict[str, dict]) -> None:
    """Square the catch-up with the windows that hold rows now. This covers what the commits read
    could not say: commits the log cleanup removed from history (a log left behind for longer than
    `delta.logRetentionDuration`, 30 days by default), commits by other writers, and commits
    written before row counts were recorded. A window said to hold rows but holding none was
    deleted; a window holding rows that nothing names was written by a commit no longer readable
    (counted as of now, checks pending; its files' time stands in for the commit's)."""
    present = {p[WINDOW_KEY_COLUMN] for p in table.partitions()}
    view = {**{k: e for k, e in logged.items() if k not in catch_up.removed}, **catch_up.added}
    for key, entry in view.items():
        if (entry["rows"] or 0) > 0 and key not in present:
            catch_up.added.pop(key, None)
            if key in logged:
                catch_up.removed.add(key)
    unknown = [k for k, e in catch_up.added.items() if e["rows"] is None]
    unlisted = sorted(present - set(view))
    if not unknown and not unlisted:
        return
    files = _window_files(table)
    for key in unknown:
        catch_up.added[key]["rows"] = files.get(key, (0, None))[0]
    for key in unlisted:
        rows, modified = files[key]
        catch_up.added[key] = {WINDOW_KEY_COLUMN: key, "rows": rows, "table_version": catch_up.version, "run_id": "",
                               "checks": CHECKS_PENDING, "materialized_at": modified}


def _window_files(table: DeltaTable) -> dict[str, tuple[int, datetime]]:
    """Rows and newest file time of each window holding rows, from the table's file list."""
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    result: dict[str, tuple[int, datetime]] = {}
    for action in actions:
        key = action[f"partition.{WINDOW_KEY_COLUMN}"]
        rows, newest = result.get(key, (0, None))
        modified = datetime.fromtimestamp(action["modification_time"] / 1000, timezone.utc)
        result[key] = (rows + (action["num_records"] or 0), max(newest or modified, modified))
    return result


def _commits_after(table: DeltaTable, version: int) -> list[dict]:
    """commitInfo of the table's commits after `version`, oldest first, each with its `version`
    (fewer when the log cleanup removed older ones). deltalake's `history` numbers the commits
    down from the version the table object holds but also returns any commit made since, so the
    table is reloaded and read again until no commit lands in between."""
    for _ in range(_RETRIES):
        holds = table.version()
        commits = table.history(holds - version)
        table.update_incremental()
        if table.version() == holds:
            return list(reversed(commits))
    raise OfflineStoreError(
        f"the Delta table at {table.table_uri} kept changing while its commits were read ({_RETRIES} attempts); "
        "retry when its writers are done."
    )
