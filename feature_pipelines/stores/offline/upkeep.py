"""Delta table upkeep: compaction, a fresh checkpoint, expired-log cleanup and vacuum, for each
feature set version's offline table and window log.

Every run of a window adds files and a commit (and its window-log entry is one more tiny file),
so tables with thousands of windows slow down to open and read unless they are compacted.
A Dagster job (one op per feature set, in the feature set's concurrency pool so it never races
a writer) runs this on a daily schedule.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.offline.delta_files import find_table, local_path, open_table
from feature_pipelines.stores.offline.executor_write import RUN_FOLDER_PREFIX
from feature_pipelines.spec.feature_set import FeatureSet

# Delta's own default: files a reader at most a week behind could still need are kept.
DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class TableUpkeep:
    """What maintenance did to one Delta table."""

    uri: str
    files_before: int
    files_after: int
    compacted_files: int
    vacuumed_files: int
    version: int
    duration_s: float


def maintain_table(uri: str, storage_options: dict[str, str] | None = None,
                   retention_hours: int = DEFAULT_RETENTION_HOURS) -> TableUpkeep | None:
    """Compact small files (per window partition), write a checkpoint, drop expired log
    files and vacuum unreferenced data files older than `retention_hours`. None when there is
    no table at `uri`."""
    started = time.perf_counter()
    table = find_table(uri, storage_options)
    if table is None:
        return None
    before = len(table.file_uris())
    compaction = table.optimize.compact()
    table = open_table(uri, storage_options)
    table.create_checkpoint()
    table.cleanup_metadata()
    vacuumed = table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
    _remove_empty_run_folders(uri)
    return TableUpkeep(
        uri=uri,
        files_before=before,
        files_after=len(table.file_uris()),
        compacted_files=int(compaction.get("numFilesRemoved", 0)),
        vacuumed_files=len(vacuumed),
        version=table.version(),
        duration_s=time.perf_counter() - started,
    )


def maintain_feature_set(feature_set: FeatureSet, offline: DeltaOfflineStore,
                         retention_hours: int = DEFAULT_RETENTION_HOURS) -> list[TableUpkeep]:
    """Maintain a version's offline table and its window log.

    The log is caught up with the table before (the table's expired commits are removed, and
    the log must have read them) and after (the upkeep commits name no window; readers then find
    the log current and skip reading the table's history)."""
    offline.sync_window_log(feature_set)
    done = [maintain_table(offline.table_uri(feature_set), offline.storage_options, retention_hours)]
    offline.sync_window_log(feature_set)
    done.append(maintain_table(offline.window_log_uri(feature_set), offline.storage_options, retention_hours))
    return [upkeep for upkeep in done if upkeep is not None]


def _remove_empty_run_folders(uri: str) -> None:
    """Vacuum deletes files, not folders: on a local disk, drop the run folders (see
    `spark_delta_write`) that it emptied. Object stores have no empty folders."""
    root = local_path(uri)
    if root is None:
        return
    for folder in Path(root).glob(f"{RUN_FOLDER_PREFIX}*"):
        for directory, _, _ in os.walk(folder, topdown=False):  # deepest first
            if not os.listdir(directory):
                os.rmdir(directory)
