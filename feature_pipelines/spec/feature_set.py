"""The feature set specification: validated, immutable objects declared in `feature_defs/`.

This layer is pure data. It knows nothing of Spark sessions, stores or Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from feature_pipelines.spec.dtypes import NUMERIC, normalize_dtype
from feature_pipelines.spec.durations import as_written, format_duration, parse_duration
from feature_pipelines.errors import SpecError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Columns the offline store adds to every row; features may not use these names.
WINDOW_KEY_COLUMN = "window_key"
CREATED_COLUMN = "created"
RESERVED_COLUMNS = frozenset({WINDOW_KEY_COLUMN, CREATED_COLUMN})

Cadence = Literal["daily", "hourly"]
AggregateFunction = Literal["sum", "count", "mean", "min", "max"]
AGGREGATE_FUNCTIONS: tuple[str, ...] = ("sum", "count", "mean", "min", "max")


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise SpecError(
            f"{what} {value!r} is not a valid name; use letters, digits and underscores, "
            "starting with a letter."
        )
    return value


@dataclass(frozen=True)
class Entity:
    """A key column that identifies what a feature describes (an account, a merchant)."""

    name: str
    dtype: str = "string"
    description: str = ""

    def __post_init__(self) -> None:
        _check_identifier(self.name, "entity")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype, field=f"entity {self.name!r}"))
        if self.dtype not in {"string", "int64", "int32"}:
            raise SpecError(f"entity {self.name!r}: key type {self.dtype!r} is not allowed; use string, int64 or int32.")


@dataclass(frozen=True)
class Feature:
    """One output column of a feature set.

    `derived_from` names the source columns it is computed from (column lineage, shown in the
    Dagster UI). Only a custom transform needs it: aggregates and copied columns know theirs.
    """

    name: str
    dtype: str
    description: str = ""
    derived_from: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_identifier(self.name, "feature")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype, field=f"feature {self.name!r}"))
        derived = (self.derived_from,) if isinstance(self.derived_from, str) else tuple(self.derived_from)
        for column in derived:
            _check_identifier(column, f"feature {self.name!r} derived_from column")
        object.__setattr__(self, "derived_from", derived)


@dataclass(frozen=True)
class Source:
    """Raw event data: a Delta table (or Parquet folder) with an event-time column.

    `path` is relative to the configured source root unless it is absolute or a URI.
    `columns` declares the schema the source must have; it is checked before any compute.
    `timezone` may be set only for a source whose timestamp column is naive: its values are
    then read as local times in that zone and converted to UTC.
    `event_id` names the column that identifies an event (a transaction id): pushed and streamed
    events are applied once by it, however often they are delivered. A feature set that streams
    (`Materialization(stream=True)`) needs it.
    """

    name: str
    path: str
    timestamp: str
    columns: Mapping[str, str]
    format: Literal["delta", "parquet"] = "delta"
    timezone: str | None = None
    description: str = ""
    event_id: str | None = None

    def __post_init__(self) -> None:
        _check_identifier(self.name, "source")
        _check_identifier(self.timestamp, f"source {self.name!r} timestamp column")
        if self.format not in ("delta", "parquet"):
            raise SpecError(f"source {self.name!r}: format {self.format!r} is not supported; use 'delta' or 'parquet'.")
        if not self.columns:
            raise SpecError(f"source {self.name!r}: declare its columns, e.g. columns={{'account_id': 'string', ...}}.")
        columns = {}
        for name, dtype in dict(self.columns).items():
            _check_identifier(name, f"source {self.name!r} column")
            columns[name] = normalize_dtype(dtype, field=f"source {self.name!r} column {name!r}")
        if self.timestamp not in columns:
            columns[self.timestamp] = "timestamp"
        elif columns[self.timestamp] != "timestamp":
            raise SpecError(
                f"source {self.name!r}: timestamp column {self.timestamp!r} is declared as "
                f"{columns[self.timestamp]!r}; declare it as 'timestamp'."
            )
        if self.event_id is not None:
            _check_identifier(self.event_id, f"source {self.name!r} event_id column")
            if self.event_id not in columns:
                raise SpecError(f"source {self.name!r}: event_id {self.event_id!r} is not one of its columns "
                                f"{sorted(columns)}; declare it in columns= or name another column.")
            if columns[self.event_id] not in ("string", "int64", "int32"):
                raise SpecError(f"source {self.name!r}: event_id {self.event_id!r} is {columns[self.event_id]!r}; an "
                                "event id must be a string, int64 or int32 column.")
        object.__setattr__(self, "columns", columns)


@dataclass(frozen=True)
class Aggregate:
    """A declarative rolling aggregate: `function(column)` over each trailing window, per entity.

    The value at time `ts` covers source events with event time in `(ts - window, ts]`.
    `name` is a template with `{window}`, `{function}` and `{column}` placeholders.
    `count` with no column counts events.
    """

    function: AggregateFunction
    column: str | None
    windows: tuple[str, ...]
    name: str = "{column}_{function}_{window}"
    description: str = ""

    def __post_init__(self) -> None:
        if self.function not in AGGREGATE_FUNCTIONS:
            raise SpecError(
                f"aggregate {self.function!r}: unknown function; use one of {', '.join(AGGREGATE_FUNCTIONS)}."
            )
        if self.column is None and self.function != "count":
            raise SpecError(f"aggregate {self.function}: needs a column; only 'count' may omit it.")
        if self.column is not None:
            _check_identifier(self.column, f"aggregate {self.function} column")
        windows = (self.windows,) if isinstance(self.windows, str) else tuple(self.windows)
        if not windows:
            raise SpecError(f"aggregate {self.function}({self.column}): give at least one window, e.g. windows=['7d'].")
        for window in windows:
            if parse_duration(window, field=f"aggregate {self.function}({self.column}) window") <= timedelta(0):
                raise SpecError(f"aggregate {self.function}({self.column}): window {window!r} must be positive.")
        object.__setattr__(self, "windows", windows)

    def feature_name(self, window: str) -> str:
        column = self.column or "event"
        return self.name.format(column=column, function=self.function, window=window)

    def output_dtype(self, column_dtype: str | None) -> str:
        if self.function == "count":
            return "int64"
        if self.function == "mean":
            return "float64"
        if self.function == "sum":
            return "int64" if column_dtype in ("int64", "int32") else "float64"
        return column_dtype or "float64"


@dataclass(frozen=True)
class Partitions:
    """The window cadence and the first window of a feature set."""

    cadence: Cadence = "daily"
    start: str | datetime = "2024-01-01"

    def __post_init__(self) -> None:
        if self.cadence not in ("daily", "hourly"):
            raise SpecError(f"partitions: cadence {self.cadence!r} is not supported; use 'daily' or 'hourly'.")
        object.__setattr__(self, "start", _parse_start(self.start))

    @property
    def window_length(self) -> timedelta:
        return timedelta(days=1) if self.cadence == "daily" else timedelta(hours=1)

    @property
    def key_format(self) -> str:
        """The strftime format of window keys; the same as Dagster's partition keys."""
        return "%Y-%m-%d" if self.cadence == "daily" else "%Y-%m-%d-%H:%M"


def _parse_start(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise SpecError(f"partitions: start {value!r} is a naive datetime; give it tzinfo=timezone.utc.")
        return value.astimezone(timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise SpecError(f"partitions: start {value!r} is not a date; write it as 'YYYY-MM-DD'.") from exc
    if parsed.tzinfo is None:
        # A bare date or datetime in a spec means UTC: windows are always UTC.
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


@dataclass(frozen=True)
class Materialization:
    """Which stores a feature set writes, and how its schedule runs.

    The schedule materializes the last complete window `delay` after it closes, to allow for
    late data (default: 1h for daily windows, 10m for hourly ones). `schedule_enabled` is the
    schedule's default status in Dagster. `stream=True` also keeps the online values fresh from
    pushed and streamed events (README, "Real-time features"); the windows stay the truth.
    """

    offline: bool = True
    online: bool = True
    delay: str | None = None
    schedule_enabled: bool = False
    stream: bool = False

    def __post_init__(self) -> None:
        if self.delay is not None:
            parse_duration(self.delay, field="materialization.delay")
        if not self.offline:
            # Online values are published from the offline table (after its quality checks).
            raise SpecError("materialization: offline=False is not supported; the online store is published from "
                            "the offline store, so keep offline=True (set online=False to skip Redis).")


@dataclass(frozen=True)
class Expectation:
    """What a feature's values must satisfy in every window; checked after each materialization.

    `max_null_rate` is a fraction (0.05 = at most 5% nulls); `min`/`max` bound every non-null
    value (numbers only).
    """

    max_null_rate: float | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.max_null_rate is not None and not 0 <= self.max_null_rate <= 1:
            raise SpecError(f"expectation max_null_rate {self.max_null_rate!r} must be between 0 and 1.")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise SpecError(f"expectation min {self.min!r} is greater than max {self.max!r}.")


@dataclass(frozen=True)
class Quality:
    """Data-quality rules of a feature set, checked after each materialization.

    A window's row count must lie within `row_count_band` times the median row count of the
    `reference_windows` materialized windows before it; windows with fewer predecessors are not
    judged, and `row_count_band=None` turns the rule off (for update-driven sources whose daily
    volume swings widely). A failed blocking check keeps the run's windows out of the online
    store. `freshness` is how long after a window closes it must be materialized; it must be
    shorter than one window (the default is the materialization delay plus a quarter of a
    window, at most one window less a minute: 7h for daily windows with a 1h delay).
    """

    row_count_band: tuple[float, float] | None = (0.2, 5.0)
    reference_windows: int = 7
    expectations: Mapping[str, Expectation] = field(default_factory=dict)
    blocking: bool = True
    freshness: str | None = None

    def __post_init__(self) -> None:
        if self.row_count_band is not None:
            low, high = self.row_count_band
            if not 0 <= low <= 1 <= high:
                raise SpecError(f"quality.row_count_band {self.row_count_band!r} must be (low, high) with "
                                "0 <= low <= 1 <= high, or None.")
        if self.reference_windows < 1:
            raise SpecError("quality.reference_windows must be at least 1.")
        object.__setattr__(self, "expectations", dict(self.expectations))
        if self.freshness is not None:
            parse_duration(self.freshness, field="quality.freshness")


@dataclass(frozen=True)
class WindowContext:
    """What a custom transform knows about the run: the range `[start, end)` it must fill."""

    start: datetime
    end: datetime
    window_keys: tuple[str, ...]
    spark: "SparkSession"


Transform = Callable[["DataFrame", WindowContext], "DataFrame"]


@dataclass(frozen=True)
class VersionRef:
    """A feature set version by name and number: all the stores need to find its data, and all
    there is of a version no longer declared (retiring one)."""

    name: str
    version: int

    @property
    def key(self) -> str:
        """The version's identity across stores: `name_vVERSION`."""
        return f"{self.name}_v{self.version}"


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned set of features computed from one source, per window.

    Exactly one way to compute it: `aggregates` (declarative rolling windows), `transform`
    (a Spark function), or neither, which copies `features` straight from the source with
    the source's event time as `ts`.
    """

    name: str
    version: int
    entities: tuple[Entity, ...]
    source: Source
    features: tuple[Feature, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    transform: Transform | None = None
    timestamp: str = "ts"
    partitions: Partitions = field(default_factory=Partitions)
    source_lookback: str = "0"
    temporal_join_lookback: str | None = None
    source_delay: str = "0"
    materialization: Materialization = field(default_factory=Materialization)
    quality: Quality = field(default_factory=Quality)
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    group: str = "feature_sets"

    def __post_init__(self) -> None:
        where = f"feature set {self.name!r}"
        _check_identifier(self.name, "feature set")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise SpecError(f"{where}: version {self.version!r} must be a whole number >= 1.")
        for name in ("entities", "features", "aggregates", "owners"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, (Entity, Feature, Aggregate, str)) else tuple(value))
        object.__setattr__(self, "tags", dict(self.tags))
        _check_identifier(self.timestamp, f"{where}: timestamp column")
        if not self.entities:
            raise SpecError(f"{where}: declare at least one entity, e.g. entities=[Entity('account_id')].")
        if not isinstance(self.source, Source):
            raise SpecError(f"{where}: source must be a Source(...), got {type(self.source).__name__}.")
        for duration_field in ("source_lookback", "source_delay"):
            parse_duration(getattr(self, duration_field), field=f"{where}: {duration_field}")
        if self.temporal_join_lookback is not None:
            if parse_duration(self.temporal_join_lookback, field=f"{where}: temporal_join_lookback") <= timedelta(0):
                raise SpecError(f"{where}: temporal_join_lookback must be positive, or None for no limit.")
            if self.ttl < self.delay:
                # Joins match t - temporal_join_lookback <= ts <= t - source_delay: empty for every t.
                lookback, delay = as_written(self.temporal_join_lookback), as_written(self.source_delay)
                raise SpecError(
                    f"{where}: temporal_join_lookback {lookback} is shorter than source_delay {delay}, so no join "
                    f"or online lookup can ever use a value: it becomes available {delay} after its ts but is "
                    f"too old {lookback} after it. Set temporal_join_lookback longer than {delay!r}, or shorten "
                    "source_delay."
                )
        for owner in self.owners:
            if not (re.match(r"^[^@\s]+@[^@\s]+$", owner) or re.match(r"^team:[A-Za-z0-9_-]+$", owner)):
                raise SpecError(f"{where}: owner {owner!r} must be an email address or 'team:name'.")
        if self.aggregates and self.transform is not None:
            raise SpecError(f"{where}: give either aggregates or transform, not both.")
        if self.aggregates and self.features and self.features != self._aggregate_features():
            # (Equal features are those derived before: dataclasses.replace passes them back in.)
            raise SpecError(
                f"{where}: features are derived from aggregates; remove features=[...] "
                "or describe them through Aggregate(description=...)."
            )
        if self.aggregates:
            object.__setattr__(self, "features", self._aggregate_features())
        if not self.features:
            raise SpecError(f"{where}: declare at least one feature (features=[...] or aggregates=[...]).")
        self._check_names(where)
        self._check_source_columns(where)
        self._check_expectations(where)
        self._check_lineage(where)
        self._check_timing(where)
        self._check_stream(where)
        if self.aggregates:
            longest = max((w for a in self.aggregates for w in a.windows), key=lambda w: parse_duration(w, field="window"))
            if self.lookback < parse_duration(longest, field="window"):
                raise SpecError(
                    f"{where}: source_lookback {as_written(self.source_lookback)} is shorter than the longest "
                    f"rolling window {as_written(longest)}; set source_lookback to at least {as_written(longest)!r}."
                )

    def _aggregate_features(self) -> tuple[Feature, ...]:
        features = []
        for aggregate in self.aggregates:
            column_dtype = self.source.columns.get(aggregate.column) if aggregate.column else None
            for window in aggregate.windows:
                features.append(
                    Feature(
                        aggregate.feature_name(window),
                        aggregate.output_dtype(column_dtype),
                        aggregate.description
                        or f"{aggregate.function}({aggregate.column or '*'}) over the trailing {window}",
                        # A count of events derives from the event times; the rest from their column.
                        derived_from=(aggregate.column or self.source.timestamp,),
                    )
                )
        return tuple(features)

    def _check_names(self, where: str) -> None:
        seen: dict[str, str] = {}
        for kind, name in (
            [("entity", e.name) for e in self.entities]
            + [("timestamp", self.timestamp)]
            + [("feature", f.name) for f in self.features]
        ):
            if name in RESERVED_COLUMNS:
                raise SpecError(f"{where}: {kind} name {name!r} is reserved by the offline store; rename it.")
            if name in seen:
                raise SpecError(f"{where}: duplicate name {name!r} (used by a {seen[name]} and a {kind}); rename one.")
            seen[name] = kind

    def _check_expectations(self, where: str) -> None:
        dtypes = {f.name: f.dtype for f in self.features}
        for name, expectation in self.quality.expectations.items():
            if name not in dtypes:
                raise SpecError(f"{where}: quality expectation for unknown feature {name!r}; features are {sorted(dtypes)}.")
            if (expectation.min is not None or expectation.max is not None) and dtypes[name] not in NUMERIC:
                raise SpecError(f"{where}: expectation min/max on {name!r} needs a numeric feature, not {dtypes[name]!r}.")

    def _check_lineage(self, where: str) -> None:
        for feature in self.features:
            unknown = [c for c in feature.derived_from if c not in self.source.columns]
            if unknown:
                raise SpecError(
                    f"{where}: feature {feature.name!r} is derived_from unknown column(s) {unknown}; "
                    f"source {self.source.name!r} has {sorted(self.source.columns)}."
                )

    def _check_timing(self, where: str) -> None:
        """The schedule delay and the freshness deadline both fit inside one window."""
        window = self.partitions.window_length
        delay = self.schedule_delay
        # As the user wrote them, where they did ('7d' stays '7d'); the defaults in their largest unit.
        written_delay = as_written(self.materialization.delay if self.materialization.delay is not None else delay)
        deadline = self.freshness_deadline
        written_deadline = as_written(self.quality.freshness if self.quality.freshness is not None else deadline)
        if delay >= window:
            raise SpecError(
                f"{where}: materialization.delay {written_delay} must be shorter than one "
                f"{'hour' if self.partitions.cadence == 'hourly' else 'day'} (the window cadence)."
            )
        if not timedelta(0) < deadline < window:
            raise SpecError(
                f"{where}: quality.freshness {written_deadline} must be positive and shorter than "
                f"one {self.partitions.cadence} window ({format_duration(window)}): it is how long after a "
                "window closes that window must be materialized."
            )
        if deadline % timedelta(minutes=1):
            raise SpecError(f"{where}: quality.freshness {written_deadline} must be whole minutes.")
        if deadline <= delay:
            raise SpecError(
                f"{where}: quality.freshness {written_deadline} is not longer than materialization.delay "
                f"{written_delay}: the schedule only starts after the delay; give the run time to finish."
            )

    def _check_stream(self, where: str) -> None:
        """A streamed set is one the stream processor can compute exactly, event by event."""
        if not self.materialization.stream:
            return
        if not self.materialization.online:
            raise SpecError(f"{where}: materialization.stream=True needs online=True: streamed values are written to "
                            "the online store; set online=True, or drop stream=True.")
        if self.transform is not None:
            raise SpecError(f"{where}: a custom Spark transform cannot stream (it runs on whole windows in Spark); "
                            "stream declarative aggregates or copied columns instead, or drop stream=True.")
        if self.source.event_id is None:
            raise SpecError(f"{where}: materialization.stream=True needs the source {self.source.name!r} to name "
                            "its event id column (Source(event_id=...)), so a redelivered event is applied once.")
        if self.delay:
            raise SpecError(f"{where}: materialization.stream=True needs source_delay 0, not "
                            f"{as_written(self.source_delay)}: a streamed value is available as soon as it is "
                            "applied; drop the delay, or drop stream=True.")

    def _check_source_columns(self, where: str) -> None:
        if self.transform is not None:
            return  # a custom transform reads whatever it likes; its output is checked instead
        columns = self.source.columns
        needed = [(e.name, e.dtype, "entity") for e in self.entities]
        if self.aggregates:
            for aggregate in self.aggregates:
                if aggregate.column is None:
                    continue
                if aggregate.column not in columns:
                    raise SpecError(
                        f"{where}: aggregate {aggregate.function}({aggregate.column}) reads unknown column "
                        f"{aggregate.column!r}; source {self.source.name!r} has {sorted(columns)}."
                    )
                if aggregate.function in ("sum", "mean") and columns[aggregate.column] not in NUMERIC:
                    raise SpecError(
                        f"{where}: {aggregate.function}({aggregate.column}) needs a numeric column, "
                        f"but it is {columns[aggregate.column]!r}."
                    )
        else:
            needed += [(f.name, f.dtype, "feature") for f in self.features]
        for name, dtype, kind in needed:
            if name not in columns:
                raise SpecError(
                    f"{where}: {kind} {name!r} is not a column of source {self.source.name!r}; "
                    f"its columns are {sorted(columns)}."
                )
            if kind == "entity" and columns[name] != dtype:
                raise SpecError(
                    f"{where}: entity {name!r} is {dtype!r} but source {self.source.name!r} declares "
                    f"{columns[name]!r}; make them agree."
                )

    # Derived values, parsed once here so the rest of the code never sees strings.
    @property
    def ref(self) -> VersionRef:
        return VersionRef(self.name, self.version)

    @property
    def key(self) -> str:
        """The feature set's identity across stores: `name_vVERSION`."""
        return self.ref.key

    @property
    def entity_names(self) -> list[str]:
        return [e.name for e in self.entities]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def lookback(self) -> timedelta:
        return parse_duration(self.source_lookback, field="source_lookback")

    @property
    def delay(self) -> timedelta:
        return parse_duration(self.source_delay, field="source_delay")

    @property
    def freshness_deadline(self) -> timedelta:
        """How long after a window closes it must be materialized (see `Quality.freshness`)."""
        if self.quality.freshness is not None:
            return parse_duration(self.quality.freshness, field="quality.freshness")
        window = self.partitions.window_length
        return min(self.schedule_delay + window / 4, window - timedelta(minutes=1))

    @property
    def schedule_delay(self) -> timedelta:
        """How long after a window closes the schedule materializes it (`Materialization.delay`)."""
        if self.materialization.delay is None:
            return timedelta(hours=1) if self.partitions.cadence == "daily" else timedelta(minutes=10)
        return parse_duration(self.materialization.delay, field="materialization.delay")

    def column_lineage(self) -> dict[str, tuple[str, ...]]:
        """Each output column and the source columns it comes from, where known."""
        lineage = {e.name: (e.name,) for e in self.entities if e.name in self.source.columns}
        passthrough = not self.aggregates and self.transform is None
        lineage[self.timestamp] = (self.source.timestamp,) if self.transform is None else ()
        for feature in self.features:
            lineage[feature.name] = feature.derived_from or ((feature.name,) if passthrough else ())
        return {column: sources for column, sources in lineage.items() if sources}

    @cached_property  # read on every online lookup: parse the duration once per spec object
    def ttl(self) -> timedelta | None:
        if self.temporal_join_lookback is None:
            return None
        return parse_duration(self.temporal_join_lookback, field="temporal_join_lookback")

    def describe(self) -> dict[str, Any]:
        """A plain summary of the spec, for metadata and the CLI."""
        return {
            "name": self.name,
            "version": self.version,
            "entities": {e.name: e.dtype for e in self.entities},
            "source": self.source.name,
            "timestamp": self.timestamp,
            "features": {f.name: f.dtype for f in self.features},
            "cadence": self.partitions.cadence,
            "first_window": self.partitions.start.isoformat(),
            "source_lookback": as_written(self.source_lookback),
            "temporal_join_lookback": as_written(self.temporal_join_lookback) if self.ttl else None,
            "source_delay": as_written(self.source_delay),
            "compute": "aggregates" if self.aggregates else ("transform" if self.transform else "passthrough"),
            "stream": self.materialization.stream,
        }


# What the stores address a version by: its spec, or only its name and number (both carry
# `name`, `version` and `key`).
Versioned = VersionRef | FeatureSet


def iter_feature_sets(values: Iterable[Any]) -> list[FeatureSet]:
    """The FeatureSet objects among module attributes, including those inside lists."""
    found: list[FeatureSet] = []
    for value in values:
        candidates = value if isinstance(value, (list, tuple)) else [value]
        for candidate in candidates:
            if isinstance(candidate, FeatureSet) and all(candidate is not f for f in found):
                found.append(candidate)
    return found
