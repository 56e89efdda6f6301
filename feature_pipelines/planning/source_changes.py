"""What a source holds and what changed in it, from the Delta log alone (no rows are read).

Used to refuse backfills of windows the source has not reached, to mark windows stale when
source files changed after they were materialized, and by the source sensor to find the
windows a new source version affects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from deltalake import DeltaTable

from feature_pipelines.errors import SourceError
from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.dtypes import arrow_times
from feature_pipelines.spec.feature_set import FeatureSet, Source
from feature_pipelines.planning.windows import Window, WindowRange, contiguous_ranges, window_containing, window_for_key

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SourceChanges:
    """The source's current version, and the complete windows that read files added since the
    version seen before, as contiguous ranges (none on the first look or without a new version)."""

    version: int
    ranges: list[WindowRange]


@dataclass(frozen=True)
class SourceFile:
    path: str
    modified: datetime
    earliest: datetime | None  # event time statistics; None when the file has none
    latest: datetime | None


def open_source(source: Source, root: str, storage_options: dict[str, str] | None = None) -> DeltaTable:
    uri = resolve_path(root, source.path)
    if source.format != "delta" or not DeltaTable.is_deltatable(uri, storage_options=storage_options or None):
        raise SourceError(
            f"source {source.name!r}: no Delta table at {uri}; backfill checks and the source sensor read the "
            "Delta log (check Source.path and FEATURESTORE_SOURCE_ROOT)."
        )
    return DeltaTable(uri, storage_options=storage_options or None)


def source_files(table: DeltaTable, source: Source) -> list[SourceFile]:
    """The files of the table's current version with their modification time and event-time range."""
    # Read as a stream: `pa.table()` on deltalake's Arrow object imports pandas (0.2 s of `status`).
    actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
    count = actions.num_rows
    paths = actions.column("path").to_pylist()
    modified = actions.column("modification_time").to_pylist()
    lows = _stats(actions, f"min.{source.timestamp}", count)
    highs = _stats(actions, f"max.{source.timestamp}", count)
    return [SourceFile(p, _utc(m), _utc(lo), _utc(hi)) for p, m, lo, hi in zip(paths, modified, lows, highs)]


@dataclass(frozen=True)
class SourceSpan:
    """The event times a source holds, from its files' statistics: `earliest..newest`, both None
    when it holds no rows."""

    earliest: datetime | None
    newest: datetime | None

    @classmethod
    def of(cls, files: list[SourceFile]) -> SourceSpan | None:
        """The span of `files`; None when a file has no event-time statistics (it may hold any time)."""
        if any(f.earliest is None or f.latest is None for f in files):
            return None
        return cls(min((f.earliest for f in files), default=None), max((f.latest for f in files), default=None))

    def has_data_for(self, window: Window) -> bool:
        """Whether the source has reached the window: the window neither ends at or before the
        earliest event nor starts after the newest one (backfills refuse the latter, see
        `check_source_reaches`)."""
        return self.newest is not None and window.end > self.earliest and window.start <= self.newest


def source_span(source: Source, root: str, storage_options: dict[str, str] | None = None) -> SourceSpan | None:
    """The source's event span from its Delta log; None when unknown (no readable Delta table, or
    files without statistics)."""
    try:
        return SourceSpan.of(source_files(open_source(source, root, storage_options), source))
    except SourceError:
        return None


def latest_event(files: list[SourceFile]) -> datetime | None:
    """The newest event time the source's statistics show; None if it has no rows or no statistics."""
    highs = [f.latest for f in files if f.latest is not None]
    return max(highs) if highs else None


def affected_windows(feature_set: FeatureSet, files: list[SourceFile], now: datetime) -> list[str]:
    """Complete windows whose source range `[start - source_lookback, end)` overlaps any of `files`."""
    keys: set[str] = set()
    first_start = feature_set.partitions.start
    for file in files:
        if file.earliest is None or file.latest is None:
            low, high = first_start, now  # no statistics: any complete window may read the file
        else:
            low, high = file.earliest, file.latest + feature_set.lookback
        window: Window = window_containing(feature_set, max(low, first_start))
        while window.start <= high and window.end <= now:
            keys.add(window.key)
            window = window_containing(feature_set, window.end)
    return sorted(keys)


def affected_ranges(feature_set: FeatureSet, files: list[SourceFile], now: datetime) -> list[WindowRange]:
    """`affected_windows` as contiguous ranges, so each range is recomputed in one run."""
    return contiguous_ranges([window_for_key(feature_set, k) for k in affected_windows(feature_set, files, now)])


def source_changes(
    feature_set: FeatureSet, root: str, storage_options: dict[str, str] | None, seen: int | None, now: datetime
) -> SourceChanges:
    """What changed in the feature set's source since version `seen` (None: never looked)."""
    table = open_source(feature_set.source, root, storage_options)
    version = table.version()
    if seen is None or version <= seen:
        return SourceChanges(version, [])
    previous = DeltaTable(table.table_uri, version=seen, storage_options=storage_options or None)
    before = {f.path for f in source_files(previous, feature_set.source)}
    added = [f for f in source_files(table, feature_set.source) if f.path not in before]
    return SourceChanges(version, affected_ranges(feature_set, added, now))


def files_changed_after(files: list[SourceFile], moment: datetime) -> list[SourceFile]:
    return [f for f in files if f.modified > moment]


def _stats(actions: pa.Table, name: str, count: int) -> list:
    if name not in actions.column_names:
        return [None] * count
    column = actions.column(name)
    return arrow_times(column) if pa.types.is_timestamp(column.type) else column.to_pylist()


def _utc(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):  # milliseconds since the epoch
        return _EPOCH + timedelta(milliseconds=value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
