"""Planning: which windows a run covers, and which source range it must read.

A window is half-open, `[start, end)`, in UTC. Window keys are the Dagster partition keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from feature_pipelines.errors import WindowError
from feature_pipelines.spec.feature_set import FeatureSet


@dataclass(frozen=True, order=True)
class Window:
    start: datetime
    end: datetime
    key: str


@dataclass(frozen=True)
class WindowRange:
    """Contiguous windows `[start, end)`, plus the source range their transform reads."""

    windows: tuple[Window, ...]

    @property
    def start(self) -> datetime:
        return self.windows[0].start

    @property
    def end(self) -> datetime:
        return self.windows[-1].end

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(w.key for w in self.windows)


def window_for_key(feature_set: FeatureSet, key: str) -> Window:
    """The window a partition key names, or a WindowError saying what a key looks like."""
    partitions = feature_set.partitions
    try:
        start = datetime.strptime(key, partitions.key_format).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        example = partitions.start.strftime(partitions.key_format)
        raise WindowError(
            f"feature set {feature_set.key}: window key {key!r} is not a {partitions.cadence} key; "
            f"write it like {example!r}."
        ) from exc
    if start < partitions.start:
        raise WindowError(
            f"feature set {feature_set.key}: window {key!r} is before the first window "
            f"{partitions.start.strftime(partitions.key_format)!r}."
        )
    return Window(start, start + partitions.window_length, key)


def windows_between(feature_set: FeatureSet, first_key: str, last_key: str) -> list[Window]:
    """Every window from `first_key` to `last_key`, both included."""
    first, last = window_for_key(feature_set, first_key), window_for_key(feature_set, last_key)
    if last.start < first.start:
        raise WindowError(
            f"feature set {feature_set.key}: range end {last_key!r} is before its start {first_key!r}; swap them."
        )
    step = feature_set.partitions.window_length
    fmt = feature_set.partitions.key_format
    windows, start = [], first.start
    while start <= last.start:
        windows.append(Window(start, start + step, start.strftime(fmt)))
        start += step
    return windows


def contiguous_ranges(windows: list[Window]) -> list[WindowRange]:
    """Group windows into runs of adjacent windows, so each range is computed in one pass."""
    ranges: list[list[Window]] = []
    for window in sorted(set(windows)):
        if ranges and ranges[-1][-1].end == window.start:
            ranges[-1].append(window)
        else:
            ranges.append([window])
    return [WindowRange(tuple(r)) for r in ranges]


def source_range(feature_set: FeatureSet, windows: WindowRange) -> tuple[datetime, datetime]:
    """The event-time range `[start - source_lookback, end)` the transform reads."""
    return windows.start - feature_set.lookback, windows.end


def window_containing(feature_set: FeatureSet, moment: datetime) -> Window:
    """The window of `feature_set`'s cadence that holds `moment` (which may precede the first window)."""
    moment = moment.astimezone(timezone.utc)
    if feature_set.partitions.cadence == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = moment.replace(minute=0, second=0, microsecond=0)
    return Window(start, start + feature_set.partitions.window_length, start.strftime(feature_set.partitions.key_format))


def describe_keys(keys: list[str], feature_set: FeatureSet) -> str:
    """Window keys as compact ranges: `2024-01-01..2024-01-05, 2024-01-09`."""
    step = feature_set.partitions.window_length
    fmt = feature_set.partitions.key_format
    parts: list[str] = []
    run: list[str] = []
    previous = None
    for key in sorted(keys):
        start = datetime.strptime(key, fmt)  # once per key: a thousand windows are common
        if run and previous + step != start:
            parts.append(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}")
            run = []
        run.append(key)
        previous = start
    if run:
        parts.append(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}")
    return ", ".join(parts)
