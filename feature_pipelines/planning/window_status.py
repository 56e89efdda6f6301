"""Per-window data status of a feature set version, like a managed store's "data status" view.

A window is, in order of precedence:
- in progress: a Dagster run is materializing it now;
- failed: its latest Dagster attempt failed (and the data, if any, is from an earlier run);
- stale: it is materialized, but source files it reads changed after that;
- materialized: written to the offline store (the window log says so);
- missing: none of the above.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from dagster import AssetKey, DagsterInstance

from feature_pipelines.orchestration.partitions import partitions_def
from feature_pipelines.errors import SourceError
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.planning.source_changes import SourceFile, open_source, source_files
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.planning.windows import describe_keys, window_containing, windows_between

STATUSES = ("materialized", "missing", "failed", "in progress", "stale")


@dataclass(frozen=True)
class WindowStatus:
    key: str
    status: str
    rows: int | None
    materialized_at: datetime | None
    run_id: str | None


def window_statuses(
    feature_set: FeatureSet,
    offline: DeltaOfflineStore,
    instance: DagsterInstance | None,
    source_root: str,
    source_storage_options: dict[str, str] | None,
    now: datetime,
    first: str | None = None,
    last: str | None = None,
) -> list[WindowStatus]:
    """Status of each window in `first..last` (default: every complete window)."""
    given = first is not None or last is not None
    first = first or window_containing(feature_set, feature_set.partitions.start).key
    if last is None:
        last = last_complete_window(feature_set, now)
    # Keys the user gave are checked (bad keys and reversed ranges are errors); by default, a set
    # with no complete window yet simply has none.
    windows = windows_between(feature_set, first, last) if given or first <= last else []
    keys = [w.key for w in windows]
    done = offline.materialized_windows(feature_set)
    dagster = {}
    if instance is not None and keys:
        dagster = instance.get_status_by_partition(AssetKey([feature_set.key]), keys, partitions_def(feature_set)) or {}
    files = _source_files(feature_set, source_root, source_storage_options)
    result = []
    for window in windows:
        entry = done.get(window.key)
        state = dagster.get(window.key)
        if state is not None and state.value == "IN_PROGRESS":
            status = "in progress"
        elif state is not None and state.value == "FAILED":
            status = "failed"
        elif entry is None:
            status = "missing"
        elif _changed_since(feature_set, window.start, window.end, files, _utc(entry["materialized_at"])):
            status = "stale"
        else:
            status = "materialized"
        result.append(WindowStatus(
            key=window.key, status=status, rows=entry["rows"] if entry else None,
            materialized_at=_utc(entry["materialized_at"]) if entry else None, run_id=(entry or {}).get("run_id") or None,
        ))
    return result


def status_summary(feature_set: FeatureSet, statuses: list[WindowStatus]) -> str:
    """Markdown: how many windows are in each status, and which ones are not materialized."""
    lines = ["| status | windows | which |", "|---|---|---|"]
    for status in STATUSES:
        keys = [s.key for s in statuses if s.status == status]
        if keys:
            which = "" if status == "materialized" else describe_keys(keys, feature_set)
            lines.append(f"| {status} | {len(keys)} | {which} |")
    return "\n".join(lines)


def last_complete_window(feature_set: FeatureSet, now: datetime) -> str:
    """The newest window that has closed at `now` (the one containing `now` is still open)."""
    return window_containing(feature_set, window_containing(feature_set, now).start - timedelta(microseconds=1)).key


def _source_files(feature_set: FeatureSet, root: str, options: dict[str, str] | None) -> list[SourceFile] | None:
    try:
        return source_files(open_source(feature_set.source, root, options), feature_set.source)
    except SourceError:
        return None  # staleness unknown without a readable Delta source


def _changed_since(feature_set: FeatureSet, start: datetime, end: datetime, files: list[SourceFile] | None,
                   materialized_at: datetime) -> bool:
    """A file modified after the window was written, whose events the window reads."""
    if files is None:
        return False
    read_from = start - feature_set.lookback
    for file in files:
        if file.modified <= materialized_at:
            continue
        if file.earliest is None or file.latest is None or (file.earliest < end and file.latest >= read_from):
            return True
    return False


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
