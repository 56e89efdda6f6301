"""Point-in-time retrieval: training datasets, batch inference and online lookups.

`FeatureStore` is the Python API. Offline retrieval implements the as-of join of SEMANTICS.md:
for each observation `(keys, t)` and feature set F, the F row with the same keys and the
greatest `ts` such that `t - temporal_join_lookback <= ts <= t - source_delay`. Two engines run
it: `LocalJoin` (NumPy, in this process) and `SparkJoin` (the executors). Before either joins, one
check finds the windows the observations need that are missing or quarantined (a blocking quality
check failed on them).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from feature_pipelines.errors import RetrievalError
from feature_pipelines.planning.source_changes import source_span
from feature_pipelines.planning.window_status import describe_quarantined, quarantined_by
from feature_pipelines.planning.windows import describe_keys, windows_between
from feature_pipelines.retrieval.local_engine import LocalJoin, write_frame
from feature_pipelines.retrieval.observations import ObservationFiles, open_observations
from feature_pipelines.retrieval.online_frame import OnlineFrameLayout, column_of, list_column
from feature_pipelines.retrieval.spans import FeatureSpan, feature_spans, key_range
from feature_pipelines.settings import Settings
from feature_pipelines.spec.catalog import Catalog, load_catalog
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.spec.request_features import RequestFeatures
from feature_pipelines.spec.retrieval_spec import FeatureSelection, RetrievalSpec
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.lookup import lookup
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.streaming.log import RedisStreamLog, max_entries_from_env
from feature_pipelines.streaming.push import Pusher
from feature_pipelines.streaming.sources import PushSources

if TYPE_CHECKING:
    from feature_pipelines.retrieval.spark_engine import SparkJoin

Engine = Literal["auto", "local", "spark"]
SpecLike = RetrievalSpec | str | Path | Sequence[str]
# Above this many observation plus feature rows, "auto" hands the join to Spark.
LOCAL_ENGINE_MAX_ROWS = 30_000_000


class FeatureStore:
    """Retrieval over the offline (Delta) and online (Redis) stores of a catalog."""

    def __init__(
        self,
        catalog: Catalog,
        offline: DeltaOfflineStore,
        online: RedisOnlineStore | None = None,
        spark: Any = None,
        local_engine_max_rows: int = LOCAL_ENGINE_MAX_ROWS,
        source_root: str | None = None,
        source_storage_options: dict[str, str] | None = None,
    ):
        """`source_root`: where the sources are, so that windows the source has no data for need
        not be materialized (without it, every window the observations can draw from must be)."""
        self.catalog = catalog
        self.offline = offline
        self.online = online
        self.source_root = source_root
        self.source_storage_options = source_storage_options
        self._spark = spark
        self.local_engine_max_rows = local_engine_max_rows
        self._local = LocalJoin()
        self._spark_join: SparkJoin | None = None  # built when Spark first joins: no JVM before
        self._resolved: dict[tuple, tuple[list[FeatureSelection], RequestFeatures]] = {}
        self._online_layouts: dict[tuple, tuple[list[FeatureSelection], OnlineFrameLayout]] = {}
        self._push: Pusher | None = None  # built on the first push

    @classmethod
    def from_env(cls, settings: Settings | None = None, online: RedisOnlineStore | None = None) -> "FeatureStore":
        settings = settings or Settings.from_env()
        if online is None and settings.redis_url:
            online = RedisOnlineStore.from_url(settings.redis_url)
        return cls(
            load_catalog(settings.feature_defs_dir),
            DeltaOfflineStore(settings.offline_uri, settings.offline_storage_options),
            online,
            source_root=settings.source_root,
            source_storage_options=settings.source_storage_options,
        )

    # --- offline --------------------------------------------------------------------------------

    def get_offline_features(
        self,
        observations: pd.DataFrame | str | Path,
        spec: SpecLike,
        *,
        timestamp_column: str = "event_timestamp",
        engine: Engine = "auto",
        full_names: bool | None = None,
        output: str | Path | None = None,
        output_format: Literal["parquet", "delta"] = "parquet",
        now: datetime | None = None,
        accept_quarantined: bool = False,
    ) -> pd.DataFrame | str:
        """The observations with the requested features appended, point-in-time correct, then the
        spec's request-time features (computed from observation columns and those features).

        One output row per observation, in the same order, with all observation columns.
        Returns a DataFrame, or the output path when `output` is given (nothing is written
        if any check fails). A window the observations need whose blocking quality checks
        failed (quarantined) is an error, like a missing one, unless `accept_quarantined`.
        """
        selections, request = self._resolved_spec(spec, full_names)
        moment = _aware("now", now) if now is not None else datetime.now(timezone.utc)
        source = open_observations(observations, timestamp_column, selections, request)
        join = self._choose_engine(engine, source.rows if isinstance(source, ObservationFiles) else len(source))
        loaded = join.load(source, timestamp_column, selections)
        span = loaded.span
        if span is not None:
            for selection in selections:
                self._check_materialized(selection.feature_set, *span, moment, accept_quarantined)
        features = feature_spans(self.offline, selections, span)
        join = self._choose_engine(engine, loaded.rows, features)
        joined = join.join(loaded, features)
        if request:
            joined = join.with_request_features(joined, request)
        return join.output(joined, output, output_format)

    def get_inference_features(
        self,
        entities: pd.DataFrame,
        spec: SpecLike,
        as_of: datetime,
        *,
        engine: Engine = "auto",
        full_names: bool | None = None,
        output: str | Path | None = None,
        output_format: Literal["parquet", "delta"] = "parquet",
        now: datetime | None = None,
        accept_quarantined: bool = False,
    ) -> pd.DataFrame | str:
        """Batch inference: the as-of join at one time `as_of` for every entity row (quarantined
        windows as in `get_offline_features`)."""
        _aware("as_of", as_of)
        column = "__as_of"
        frame = entities.copy()
        frame[column] = pd.Timestamp(as_of).tz_convert("UTC")
        result = self.get_offline_features(
            frame, spec, timestamp_column=column, engine=engine, full_names=full_names, now=now or as_of,
            accept_quarantined=accept_quarantined,
        )
        assert isinstance(result, pd.DataFrame)
        result = result.drop(columns=column)
        return result if output is None else write_frame(result, output, output_format)

    def resolve(self, spec: SpecLike, full_names: bool | None = None) -> list[FeatureSelection]:
        """The selections a spec names (the same list object on every call for a spec)."""
        return self._resolved_spec(spec, full_names)[0]

    def request_features(self, spec: SpecLike, full_names: bool | None = None) -> RequestFeatures:
        """The request-time features a spec declares (empty when none), bound to its columns."""
        return self._resolved_spec(spec, full_names)[1]

    def _resolved_spec(self, spec: SpecLike, full_names: bool | None) -> tuple[list[FeatureSelection], RequestFeatures]:
        """Selections and request features; cached, since online lookups resolve the same spec per call."""
        cache_key = (spec if isinstance(spec, (RetrievalSpec, str, Path)) else tuple(spec), full_names)
        cached = self._resolved.get(cache_key)
        if cached is None:
            retrieval = _retrieval_spec(spec)
            selections = retrieval.resolve(self.catalog, full_names)
            cached = self._resolved[cache_key] = (selections, retrieval.bind_request_features(self.catalog, selections))
        return cached

    def _check_materialized(self, feature_set: FeatureSet, t_min: datetime, t_max: datetime, now: datetime,
                            accept_quarantined: bool) -> None:
        """Every complete window the observations can draw from must be materialized, unless the
        source has no data for it (it would be empty: the join is the same without it). No window
        they can draw from may be quarantined (its blocking checks failed; complete or not, its
        rows would be joined) unless the caller accepts them. Windows whose checks are pending (a
        run died before them) count as materialized."""
        span = key_range(feature_set, t_min, t_max)
        if span is None:
            return
        needed = [w for w in windows_between(feature_set, *span) if w.end <= now]
        done = self.offline.materialized_windows(feature_set)
        absent = [w for w in needed if w.key not in done]
        reached = None if not absent or self.source_root is None else source_span(
            feature_set.source, self.source_root, self.source_storage_options)
        missing = [w.key for w in absent if reached is None or reached.has_data_for(w)]
        failed = {} if accept_quarantined else {
            k: checks for k, e in done.items() if span[0] <= k <= span[1] and (checks := quarantined_by(e)) is not None}
        if not missing and not failed:
            return
        problems = []
        if missing:
            what = "was never materialized" if not done else f"is missing {len(missing)} window(s)"
            problems.append(f"{what} that these observations need: {describe_keys(missing, feature_set)}")
        if failed:
            problems.append(f"has {len(failed)} quarantined window(s) that these observations need, whose blocking "
                            f"quality checks failed: {describe_quarantined(failed, feature_set)}")
        keys = sorted([*missing, *failed])
        fix = (f"`featurestore materialize {feature_set.name} --version {feature_set.version} "
               f"--start {keys[0]} --end {keys[-1]}`")
        raise RetrievalError(
            f"feature set {feature_set.key} {', and '.join(problems)}. "
            + (f"Fix the data and materialize them again, e.g. {fix}, or use their rows as they are with "
               "accept_quarantined=True (CLI: --accept-quarantined)." if failed else f"Materialize them, e.g. {fix}.")
        )

    def _choose_engine(
        self, engine: Engine, observations: int, features: Sequence[FeatureSpan] = ()
    ) -> LocalJoin | SparkJoin:
        """The engine asked for; for "auto", Spark when the observations plus the feature rows
        they can match exceed `local_engine_max_rows`. Asked before the observations are loaded
        (when only a stored set's size is known, and one too large for this process stays in
        Spark), then again with the feature rows in their span."""
        if _known_engine(engine) == "auto":
            total = observations
            for feature in features:
                if total > self.local_engine_max_rows:
                    break
                total += feature.rows()
            engine = "local" if total <= self.local_engine_max_rows else "spark"
        if engine == "local":
            return self._local
        if self._spark_join is None:
            from feature_pipelines.retrieval.spark_engine import SparkJoin  # imports pyspark's engine code

            self._spark_join = SparkJoin(self._spark)
        return self._spark_join

    # --- online ---------------------------------------------------------------------------------

    def get_online_features(
        self,
        spec: SpecLike,
        entity_rows: pd.DataFrame | Iterable[dict[str, Any]],
        *,
        now: datetime | None = None,
        full_names: bool | None = None,
        as_frame: bool = True,
    ) -> pd.DataFrame | dict[str, list]:
        """Latest values from Redis for each entity row, in one round trip, then the spec's
        request-time features (from the rows' request fields and those values).

        A value older than the feature set's temporal_join_lookback at `now` is missing (None).
        """
        if self.online is None:
            raise RetrievalError("no online store configured; set REDIS_URL or pass online=RedisOnlineStore(...).")
        selections, request = self._resolved_spec(spec, full_names)
        if isinstance(entity_rows, pd.DataFrame):
            # A frame keeps the entity rows' own columns: then only the keys (and request fields) are needed as lists.
            keys = {k for s in selections for k in s.feature_set.entity_names} | set(request.fields) if as_frame else None
            given = {c: entity_rows[c].tolist() for c in entity_rows.columns if keys is None or c in keys}
        else:
            records = list(entity_rows)
            names = list(records[0]) if records else []
            given = {c: [r.get(c) for r in records] for c in names}
        moment = _aware("now", now) if now is not None else datetime.now(timezone.utc)
        if request:
            request.check_columns(entity_rows.columns if isinstance(entity_rows, pd.DataFrame) else given, "entity rows")
        found = lookup(self.online, selections, given, moment)  # the feature server's read path too
        # Request features from the rows' fields and the values found, as the feature server computes them.
        computed = request.apply(ChainMap(*(v.columns for v in reversed(found)), given)) if request else {}
        if not as_frame:
            columns: dict[str, list] = dict(given)
            for values in found:
                columns.update(values.columns)
            columns.update(computed)
            return columns
        if isinstance(entity_rows, pd.DataFrame):
            passed = {c: column_of(entity_rows[c]) for c in entity_rows.columns}
            index = entity_rows.index
        else:
            passed = {c: list_column(values) for c, values in given.items()}
            index = pd.RangeIndex(len(records))
        frame = self._online_layout(list(passed), selections).frame(passed, found, index)
        for name, values in computed.items():
            frame[name] = values  # typed as pd.DataFrame(dict) would
        return frame

    # --- push -----------------------------------------------------------------------------------

    def push(self, source_name: str, events: Any) -> int:
        """Append events of a streamed source to its event log, for the stream processor to apply
        online and append to the source's Delta table; how many were accepted.

        `events`: a list of dicts, a pandas DataFrame or a pyarrow Table of the source's declared
        columns (event times UTC-aware). A bad event refuses the whole batch (EventError naming
        its row and column); the batch is appended all or nothing (EventLogError when Redis is
        down or the log is full).
        """
        if self.online is None:
            raise RetrievalError("no online store configured; set REDIS_URL or pass online=RedisOnlineStore(...): "
                                 "pushed events go to the event log in that Redis.")
        if self._push is None:
            self._push = Pusher(PushSources(self.catalog),
                                RedisStreamLog(self.online.client, self.online.url, max_entries_from_env()))
        return self._push.push(source_name, events)

    def _online_layout(self, given: list[str], selections: list[FeatureSelection]) -> OnlineFrameLayout:
        """The frame layout of a resolved spec (`resolve` returns the same list per spec) and entity columns."""
        cache_key = (id(selections), tuple(given))
        cached = self._online_layouts.get(cache_key)
        if cached is None or cached[0] is not selections:
            cached = self._online_layouts[cache_key] = (selections, OnlineFrameLayout(given, selections))
        return cached[1]


def _retrieval_spec(spec: SpecLike) -> RetrievalSpec:
    """A spec as given: a RetrievalSpec, a YAML path, one entry or a list of entries."""
    if isinstance(spec, RetrievalSpec):
        return spec
    if isinstance(spec, (str, Path)) and (str(spec).endswith((".yaml", ".yml")) or Path(spec).exists()):
        return RetrievalSpec.from_yaml(spec)
    if isinstance(spec, str):
        return RetrievalSpec.of([spec])
    return RetrievalSpec.of(list(spec))


def _aware(name: str, moment: datetime) -> datetime:
    """`moment`, if it carries a time zone: a naive one cannot be compared with the stores' UTC times."""
    if moment.tzinfo is None:
        raise RetrievalError(f"{name} {moment.isoformat()} is a naive datetime; give it a time zone (UTC).")
    return moment


def _known_engine(engine: str) -> str:
    if engine not in ("auto", "local", "spark"):
        raise RetrievalError(f"engine {engine!r} is unknown; use 'auto', 'local' or 'spark'.")
    return engine
