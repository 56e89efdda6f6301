"""Per-window data status of a feature set version, like a managed store's "data status" view.

A window is, in order of precedence:
- in progress: a Dagster run is materializing it now;
- quarantined: written, but a blocking quality check failed on it (the window log names the
  checks): never published online, refused by retrieval unless accepted, until a run whose checks
  pass writes it again. Its run failed too; the data is what retrieval would read, so this comes
  first;
- failed: its latest Dagster attempt failed (and the data, if any, is from an earlier run);
- stale: it is materialized, but source files it reads changed after that;
- materialized: written to the offline store (the window log says so);
- no source data: none of the above, and the source has no events for it: the window ends at or
  before the source's earliest event (the source begins later), or starts after its newest one
  (the data has not arrived yet). There is nothing to compute, so it does not count as behind;
- missing: none of the above: the source has data for the window but the store lacks it.

Pure rules: the window log entries, the run state of each window (read from Dagster by
`orchestration.window_states`) and the source's files (their event-time statistics) come in;
statuses come out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from feature_pipelines.errors import SourceError
from feature_pipelines.planning.source_changes import SourceFile, SourceSpan, open_source, source_files
from feature_pipelines.planning.windows import Window, describe_keys, window_containing, windows_between
from feature_pipelines.spec.feature_set import FeatureSet

MATERIALIZED = "materialized"
MISSING = "missing"
FAILED = "failed"
IN_PROGRESS = "in progress"
STALE = "stale"
NO_SOURCE_DATA = "no source data"
QUARANTINED = "quarantined"
STATUSES = (MATERIALIZED, MISSING, FAILED, QUARANTINED, IN_PROGRESS, STALE, NO_SOURCE_DATA)
# The windows a set is behind on: the source has data for them, the store lacks usable rows.
BEHIND = (MISSING, FAILED, QUARANTINED)


@dataclass(frozen=True)
class WindowStatus:
    key: str
    status: str
    rows: int | None
    materialized_at: datetime | None
    run_id: str | None
    failed_checks: tuple[str, ...] = ()  # the blocking checks its rows failed (quarantined, or in progress again)


def quarantined_by(entry: Mapping | None) -> tuple[str, ...] | None:
    """The blocking checks a window log entry failed, or None when the window is not quarantined.
    The log gives `failed_checks` (a list) only with a failed verdict; it is empty when the log
    predates check names. Windows whose checks are pending (a run died before its checks) are
    not quarantined: nothing says their rows are bad."""
    failed = None if entry is None else entry.get("failed_checks")
    return None if failed is None else tuple(failed)


def status_windows(feature_set: FeatureSet, now: datetime, first: str | None = None,
                   last: str | None = None) -> list[Window]:
    """The windows `first..last` (default: every complete window at `now`)."""
    given = first is not None or last is not None
    first = first or window_containing(feature_set, feature_set.partitions.start).key
    if last is None:
        last = last_complete_window(feature_set, now)
    # Keys the user gave are checked (bad keys and reversed ranges are errors); by default, a set
    # with no complete window yet simply has none.
    return windows_between(feature_set, first, last) if given or first <= last else []


def window_statuses(
    feature_set: FeatureSet,
    windows: list[Window],
    logged: Mapping[str, Mapping],
    files: list[SourceFile] | None,
    run_states: Mapping[str, str | None] | None = None,
) -> list[WindowStatus]:
    """Status of each of `windows`. `logged` is the window log (key -> entry, as
    `materialized_windows` returns it); `files` the source's files, None when unknown (then no
    window is stale, and none lacks source data); `run_states` the Dagster state of a window's
    latest run, `IN_PROGRESS` or `FAILED` (other keys and None count as neither)."""
    states = run_states or {}
    span = None if files is None else SourceSpan.of(files)
    result = []
    for window in windows:
        entry = logged.get(window.key)
        state = states.get(window.key)
        failed_checks = quarantined_by(entry)
        if state == IN_PROGRESS:
            status = IN_PROGRESS
        elif failed_checks is not None:
            status = QUARANTINED
        elif state == FAILED:
            status = FAILED
        elif entry is None:
            status = MISSING if span is None or span.has_data_for(window) else NO_SOURCE_DATA
        elif _changed_since(feature_set, window.start, window.end, files, _utc(entry["materialized_at"])):
            status = STALE
        else:
            status = MATERIALIZED
        result.append(WindowStatus(
            key=window.key, status=status, rows=entry["rows"] if entry else None,
            materialized_at=_utc(entry["materialized_at"]) if entry else None, run_id=(entry or {}).get("run_id") or None,
            failed_checks=failed_checks or (),
        ))
    return result


def describe_status(statuses: Sequence[WindowStatus], status: str, feature_set: FeatureSet) -> str:
    """The windows in `status`, as compact ranges; quarantined ones with the checks they failed."""
    if status == QUARANTINED:
        return describe_quarantined({s.key: s.failed_checks for s in statuses if s.status == status}, feature_set)
    return describe_keys([s.key for s in statuses if s.status == status], feature_set)


def describe_quarantined(failed: Mapping[str, Sequence[str]], feature_set: FeatureSet) -> str:
    """Quarantined windows (key -> the blocking checks it failed) as ranges per set of checks:
    `2024-03-01..2024-03-02 (failed row_count_in_band); 2024-03-09 (failed expectations)`."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for key in sorted(failed):
        groups.setdefault(tuple(failed[key]), []).append(key)
    return "; ".join(
        f"{describe_keys(keys, feature_set)} (failed {', '.join(checks) or 'checks not recorded'})"
        for checks, keys in groups.items()
    )


def status_summary(feature_set: FeatureSet, statuses: list[WindowStatus]) -> str:
    """Markdown: how many windows are in each status, and which ones are not materialized."""
    lines = ["| status | windows | which |", "|---|---|---|"]
    for status in STATUSES:
        count = sum(1 for s in statuses if s.status == status)
        if count:
            which = "" if status == MATERIALIZED else describe_status(statuses, status, feature_set)
            lines.append(f"| {status} | {count} | {which} |")
    return "\n".join(lines)


def last_complete_window(feature_set: FeatureSet, now: datetime) -> str:
    """The newest window that has closed at `now` (the one containing `now` is still open)."""
    return window_containing(feature_set, window_containing(feature_set, now).start - timedelta(microseconds=1)).key


def staleness_files(feature_set: FeatureSet, root: str, options: dict[str, str] | None) -> list[SourceFile] | None:
    """The source's current files, or None when it is no readable Delta table."""
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
