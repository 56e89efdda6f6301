"""Point-in-time retrieval: training datasets, batch inference and online lookups.

`FeatureStore` is the Python API. Offline retrieval implements the as-of join of SEMANTICS.md:
for each observation `(keys, t)` and feature set F, the F row with the same keys and the
greatest `ts` such that `t - temporal_join_lookback <= ts <= t - source_delay`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import write_deltalake

from feature_pipelines.spec.catalog import Catalog, load_catalog
from feature_pipelines.stores.offline.delta_files import data_files, read_delta
from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.spec.durations import epoch_micros, micros
from feature_pipelines.errors import RetrievalError
from feature_pipelines.retrieval.observations import (
    ObservationFiles,
    check_observation_schema,
    check_observations,
    null_timestamps_error,
    open_observation_files,
)
from feature_pipelines.stores.online.codec import micros_to_datetime
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.retrieval.local_join import asof_indices, entity_codes, take_features
from feature_pipelines.spec.retrieval_spec import FeatureSelection, RetrievalSpec
from feature_pipelines.settings import Settings
from feature_pipelines.spec.feature_set import WINDOW_KEY_COLUMN, FeatureSet
from feature_pipelines.planning.windows import describe_keys, window_containing, windows_between

Engine = Literal["auto", "local", "spark"]
SpecLike = RetrievalSpec | str | Path | Sequence[str]
# Above this many observation plus feature rows, "auto" hands the join to Spark.
LOCAL_ENGINE_MAX_ROWS = 30_000_000
# Up to this many observations, the Spark engine broadcasts their matches (at most one per
# observation and feature set) instead of shuffling the wide feature rows.
BROADCAST_MAX_ROWS = 5_000_000


class FeatureStore:
    """Retrieval over the offline (Delta) and online (Redis) stores of a catalog."""

    def __init__(
        self,
        catalog: Catalog,
        offline: DeltaOfflineStore,
        online: RedisOnlineStore | None = None,
        spark: Any = None,
        local_engine_max_rows: int = LOCAL_ENGINE_MAX_ROWS,
    ):
        self.catalog = catalog
        self.offline = offline
        self.online = online
        self._spark = spark
        self.local_engine_max_rows = local_engine_max_rows
        self._resolved: dict[tuple, list[FeatureSelection]] = {}

    @classmethod
    def from_env(cls, settings: Settings | None = None, online: RedisOnlineStore | None = None) -> "FeatureStore":
        settings = settings or Settings.from_env()
        if online is None and settings.redis_url:

            online = RedisOnlineStore.from_url(settings.redis_url)
        return cls(
            load_catalog(settings.feature_defs_dir),
            DeltaOfflineStore(settings.offline_uri, settings.offline_storage_options),
            online,
        )

    @property
    def spark(self) -> Any:
        if self._spark is None:
            from pyspark.sql import SparkSession

            from feature_pipelines.orchestration.resources import spark_config

            builder = SparkSession.builder
            for key, value in spark_config(Settings.from_env()).items():
                builder = builder.config(key, value)
            self._spark = builder.getOrCreate()
        return self._spark

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
    ) -> pd.DataFrame | str:
        """The observations with the requested features appended, point-in-time correct.

        One output row per observation, in the same order, with all observation columns.
        Returns a DataFrame, or the output path when `output` is given (nothing is written
        if any check fails).
        """
        selections = self.resolve(spec, full_names)
        moment = now or datetime.now(timezone.utc)
        if isinstance(observations, (str, Path)):
            stored = open_observation_files(observations)
            check_observation_schema(stored.schema, timestamp_column, selections)
            if stored.rows and self._spark_for_stored(engine, stored.rows):
                return self._offline_spark_files(stored, timestamp_column, selections, output, output_format, moment)
            frame = stored.load()
        else:
            frame = observations
        t = check_observations(frame, timestamp_column, selections)
        t_min, t_max = (t.min().floor("us").to_pydatetime(), t.max().floor("us").to_pydatetime()) if len(t) else (None, None)
        for selection in selections:
            if t_min is not None:
                self._check_materialized(selection.feature_set, t_min, t_max, moment)
        if frame.empty:
            result = frame.assign(**{c: pd.Series([], dtype=object) for s in selections for c in s.columns})
        elif self._choose_engine(engine, len(frame), selections, t_min, t_max) == "spark":
            result = self._join_spark(frame, timestamp_column, selections, t_min, t_max)
        else:
            result = self._join_local(frame, t, selections, t_min, t_max)
        if output is None:
            return result
        return write_frame(result, output, output_format)

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
    ) -> pd.DataFrame | str:
        """Batch inference: the as-of join at one time `as_of` for every entity row."""
        if as_of.tzinfo is None:
            raise RetrievalError(f"as_of {as_of.isoformat()} is a naive datetime; give it a time zone (UTC).")
        column = "__as_of"
        frame = entities.copy()
        frame[column] = pd.Timestamp(as_of).tz_convert("UTC")
        result = self.get_offline_features(
            frame, spec, timestamp_column=column, engine=engine, full_names=full_names, now=now or as_of
        )
        assert isinstance(result, pd.DataFrame)
        result = result.drop(columns=column)
        return result if output is None else write_frame(result, output, output_format)

    def resolve(self, spec: SpecLike, full_names: bool | None = None) -> list[FeatureSelection]:
        """The selections a spec names; cached, since online lookups resolve the same spec per call."""
        cache_key = (spec if isinstance(spec, (RetrievalSpec, str, Path)) else tuple(spec), full_names)
        cached = self._resolved.get(cache_key)
        if cached is None:
            cached = self._resolved[cache_key] = self._resolve(spec, full_names)
        return cached

    def _resolve(self, spec: SpecLike, full_names: bool | None) -> list[FeatureSelection]:
        if isinstance(spec, RetrievalSpec):
            retrieval = spec
        elif isinstance(spec, (str, Path)) and (str(spec).endswith((".yaml", ".yml")) or Path(spec).exists()):
            retrieval = RetrievalSpec.from_yaml(spec)
        elif isinstance(spec, str):
            retrieval = RetrievalSpec.of([spec])
        else:
            retrieval = RetrievalSpec.of(list(spec))
        return retrieval.resolve(self.catalog, full_names)

    def _check_materialized(self, feature_set: FeatureSet, t_min: datetime, t_max: datetime, now: datetime) -> None:
        """Every complete window the observations can draw from must be materialized."""
        span = self._key_range(feature_set, t_min, t_max)
        if span is None:
            return
        needed = [w for w in windows_between(feature_set, *span) if w.end <= now]
        done = self.offline.materialized_windows(feature_set)
        missing = [w.key for w in needed if w.key not in done]
        if not missing:
            return
        what = "was never materialized" if not done else f"is missing {len(missing)} window(s)"
        raise RetrievalError(
            f"feature set {feature_set.key} {what} that these observations need: {describe_keys(missing, feature_set)}. "
            f"Materialize them, e.g. `featurestore materialize {feature_set.name} --version {feature_set.version} "
            f"--start {missing[0]} --end {missing[-1]}`."
        )

    def _choose_engine(
        self, engine: Engine, observations: int, selections: list[FeatureSelection], t_min, t_max
    ) -> Literal["local", "spark"]:
        if _known_engine(engine) != "auto":
            return engine
        total = observations
        for selection in selections:
            span = self._key_range(selection.feature_set, t_min, t_max)
            if span is not None and self.offline.exists(selection.feature_set):
                table = self.offline.table(selection.feature_set)
                first, last = span
                actions = pa.table(table.get_add_actions(flatten=True))
                part = actions.column(f"partition.{WINDOW_KEY_COLUMN}")
                inside = pc.and_(pc.greater_equal(part, first), pc.less_equal(part, last))
                total += int(pc.sum(pc.filter(actions.column("num_records"), inside)).as_py() or 0)
        return "local" if total <= self.local_engine_max_rows else "spark"

    def _key_range(self, feature_set: FeatureSet, t_min: datetime, t_max: datetime) -> tuple[str, str] | None:
        """The first and last window keys that can hold a row matching observations in
        [t_min, t_max], or None when none can (string order is time order for window keys)."""
        first_start = feature_set.partitions.start
        newest = t_max - feature_set.delay
        oldest = max(first_start, t_min - feature_set.ttl) if feature_set.ttl else first_start
        if newest < first_start or oldest > newest:
            return None
        return window_containing(feature_set, oldest).key, window_containing(feature_set, newest).key

    def _feature_rows(self, selection: FeatureSelection, t_min: datetime, t_max: datetime) -> pa.Table:
        feature_set = selection.feature_set
        columns = [*feature_set.entity_names, feature_set.timestamp, *selection.features]
        span = self._key_range(feature_set, t_min, t_max)
        if span is None or not self.offline.exists(feature_set):
            return _empty(feature_set, columns)
        first, last = span
        in_span = (pc.field(WINDOW_KEY_COLUMN) >= first) & (pc.field(WINDOW_KEY_COLUMN) <= last)
        return read_delta(self.offline.table(feature_set), columns=columns, filter=in_span,
                          prune=[(WINDOW_KEY_COLUMN, ">=", first), (WINDOW_KEY_COLUMN, "<=", last)])

    def _join_local(
        self, frame: pd.DataFrame, t: pd.Series, selections: list[FeatureSelection], t_min, t_max
    ) -> pd.DataFrame:
        t_floor = _micros_floor(t)
        t_ceil = _micros_ceil(t)
        result = frame.copy()
        for selection in selections:
            feature_set = selection.feature_set
            rows = self._feature_rows(selection, t_min, t_max)
            keys = feature_set.entity_names
            obs_codes, row_codes = entity_codes(
                [_key_array(frame, k, feature_set) for k in keys], [rows.column(k).combine_chunks() for k in keys]
            )
            row_ts = rows.column(feature_set.timestamp).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
            cutoff = t_floor - micros(feature_set.delay)
            oldest = t_ceil - micros(feature_set.ttl) if feature_set.ttl else None
            indices = asof_indices(obs_codes, cutoff, oldest, row_codes, row_ts)
            for name, column in zip(selection.columns, take_features(rows, list(selection.features), indices).values()):
                result[name] = column.to_pandas().to_numpy()
        return result

    def _spark_for_stored(self, engine: Engine, rows: int) -> bool:
        """Stored observations stay in Spark when asked, or when they alone exceed the local engine."""
        engine = _known_engine(engine)
        return engine == "spark" or (engine == "auto" and rows > self.local_engine_max_rows)

    def _offline_spark_files(
        self, stored: ObservationFiles, timestamp_column: str, selections: list[FeatureSelection],
        output: str | Path | None, output_format: str, now: datetime,
    ) -> pd.DataFrame | str:
        """The whole retrieval in Spark: the observations are read, joined and written by the executors."""
        from pyspark.sql import functions as F

        from feature_pipelines.retrieval.spark_join import ROW_ID, T_CEIL, T_FLOOR
        from feature_pipelines.retrieval.spark_observations import from_files, write_output

        observations = from_files(self.spark, stored, timestamp_column)
        nulls, t_low, t_high = observations.agg(
            F.count_if(F.col(timestamp_column).isNull()), F.min(T_FLOOR), F.max(T_CEIL)
        ).first()
        if nulls:
            raise null_timestamps_error(timestamp_column, int(nulls))
        t_min, t_max = micros_to_datetime(int(t_low)), micros_to_datetime(int(t_high))
        for selection in selections:
            self._check_materialized(selection.feature_set, t_min, t_max, now)
        joined = self.spark_join(observations, selections, t_min, t_max, broadcast_matches=stored.rows <= BROADCAST_MAX_ROWS)
        if output is None:
            return _spark_to_pandas(joined.drop(ROW_ID), observations.drop(ROW_ID, T_FLOOR, T_CEIL).columns, stored.schema)
        return write_output(joined.drop(ROW_ID), str(output), output_format)

    def _join_spark(
        self, frame: pd.DataFrame, timestamp_column: str, selections: list[FeatureSelection], t_min, t_max
    ) -> pd.DataFrame:
        from feature_pipelines.retrieval.spark_join import ROW_ID
        from feature_pipelines.retrieval.spark_observations import from_pandas

        observations = from_pandas(self.spark, frame, timestamp_column)
        joined = self.spark_join(observations, selections, t_min, t_max, broadcast_matches=len(frame) <= BROADCAST_MAX_ROWS)
        out = _spark_to_pandas(joined.drop(ROW_ID), list(frame.columns), pa.Schema.from_pandas(frame.head(0), preserve_index=False))
        out.index = frame.index
        return out

    def spark_join(self, observations, selections: list[FeatureSelection], t_min, t_max, *, broadcast_matches: bool):
        """The as-of join as a Spark DataFrame; `observations` carries ROW_ID, T_FLOOR and T_CEIL
        (see spark_observations), and the result is ordered by ROW_ID."""
        from feature_pipelines.retrieval.spark_join import SparkFeatureRequest, asof_join_spark

        self.spark.conf.set("spark.sql.session.timeZone", "UTC")
        requests = []
        for selection in selections:
            feature_set = selection.feature_set
            columns = [*feature_set.entity_names, feature_set.timestamp, *selection.features]
            rows = self._spark_rows(selection, t_min, t_max, columns)
            requests.append(SparkFeatureRequest(
                feature_set.entity_names, rows, feature_set.timestamp, list(selection.features),
                list(selection.columns), feature_set.delay, feature_set.ttl,
            ))
        return asof_join_spark(observations, requests, broadcast_matches=broadcast_matches)

    def _spark_rows(self, selection: FeatureSelection, t_min, t_max, columns: list[str]):
        feature_set = selection.feature_set
        files = []
        span = self._key_range(feature_set, t_min, t_max)
        if span is not None and self.offline.exists(feature_set):
            table = self.offline.table(feature_set)
            first, last = span
            files = data_files(table, partition_column=WINDOW_KEY_COLUMN, first_partition=first, last_partition=last)
        if not files:
            return self.spark.createDataFrame([], _spark_schema(feature_set, columns))
        return self.spark.read.option("basePath", table.table_uri).parquet(*files).select(*columns)

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
        """Latest values from Redis for each entity row, in one round trip.

        A value older than the feature set's temporal_join_lookback at `now` is missing (None).
        """
        if self.online is None:
            raise RetrievalError("no online store configured; set REDIS_URL or pass online=RedisOnlineStore(...).")
        selections = self.resolve(spec, full_names)
        if isinstance(entity_rows, pd.DataFrame):
            given = {c: entity_rows[c].tolist() for c in entity_rows.columns}
        else:
            records = list(entity_rows)
            names = list(records[0]) if records else []
            given = {c: [r.get(c) for r in records] for c in names}
        for selection in selections:
            missing = [k for k in selection.feature_set.entity_names if k not in given]
            if missing:
                raise RetrievalError(
                    f"entity rows lack key column(s) {missing} of feature set {selection.feature_set.key}."
                )
        moment = now or datetime.now(timezone.utc)
        if moment.tzinfo is None:
            raise RetrievalError("now is a naive datetime; give it a time zone (UTC).")
        requests = [(s.feature_set, list(zip(*(given[k] for k in s.feature_set.entity_names)))) for s in selections]
        columns: dict[str, list] = dict(given)
        moment_us = epoch_micros(moment)
        for selection, decoded in zip(selections, self.online.read_many(requests)):
            ttl = selection.feature_set.ttl
            stale = decoded.ts_micros < 0
            if ttl is not None:
                stale |= moment_us - decoded.ts_micros > micros(ttl)
            hidden = np.flatnonzero(stale).tolist()
            for feature, column in zip(selection.features, selection.columns):
                values = decoded.columns[feature]
                if hidden and len(hidden) < len(values):
                    values = list(values)
                    for i in hidden:
                        values[i] = None
                elif hidden:
                    values = [None] * len(values)
                columns[column] = values
        if not as_frame:
            return columns
        return pd.DataFrame(columns, index=entity_rows.index if isinstance(entity_rows, pd.DataFrame) else None)


def _empty(feature_set: FeatureSet, columns: list[str]) -> pa.Table:
    from feature_pipelines.stores.offline.delta_store import offline_schema

    schema = offline_schema(feature_set)
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def _spark_schema(feature_set: FeatureSet, columns: list[str]):
    from pyspark.sql import types as T

    from feature_pipelines.spec.dtypes import spark_type

    dtypes = {e.name: e.dtype for e in feature_set.entities} | {f.name: f.dtype for f in feature_set.features}
    dtypes[feature_set.timestamp] = "timestamp"
    return T.StructType([T.StructField(c, spark_type(dtypes[c]), True) for c in columns])


def _key_array(frame: pd.DataFrame, column: str, feature_set: FeatureSet) -> pa.Array:
    """An observation key column as Arrow, in the type the feature set stores the key in."""
    dtype = next(e.dtype for e in feature_set.entities if e.name == column)
    values = pa.array(frame[column], from_pandas=True)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    try:
        return values.cast(arrow_type(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RetrievalError(
            f"observation column {column!r} has type {values.type}, but feature set {feature_set.key} keys "
            f"{column!r} as {dtype}; convert the column (e.g. frame[{column!r}].astype(str))."
        ) from exc


def _micros_floor(t: pd.Series) -> np.ndarray:
    return t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1000


def _micros_ceil(t: pd.Series) -> np.ndarray:
    return -((-t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)) // 1000)


def _known_engine(engine: str) -> str:
    if engine not in ("auto", "local", "spark"):
        raise RetrievalError(f"engine {engine!r} is unknown; use 'auto', 'local' or 'spark'.")
    return engine


def _spark_to_pandas(joined, observation_columns: list[str], schema: pa.Schema) -> pd.DataFrame:
    """Collect a Spark result; time-zone-aware observation columns come back UTC-aware."""
    out = joined.toPandas()
    for column in observation_columns:
        field_type = schema.field(column).type if column in schema.names else None
        if field_type is not None and pa.types.is_timestamp(field_type) and field_type.tz and out[column].dt.tz is None:
            out[column] = out[column].dt.tz_localize("UTC")
    return out


def write_frame(frame: pd.DataFrame, output: str | Path, output_format: str) -> str:
    """Write a retrieval result as one Parquet file or a Delta table; return the path."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if output_format == "delta":
        write_deltalake(str(output), table, mode="overwrite")
    elif output_format == "parquet":
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, str(output))
    else:
        raise RetrievalError(f"output format {output_format!r} is unknown; use 'parquet' or 'delta'.")
    return str(output)
