"""The brute-force as-of join reference, written straight from SEMANTICS.md, and the random
cases both join engines are tested on (unit/retrieval/test_local_join.py, integration/test_spark_join.py).

For each observation (keys, t) and feature set F: the F row with the same keys and the greatest
ts such that `t - temporal_join_lookback <= ts <= t - source_delay`; null when none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import strategies as st

from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, offline_schema
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.planning.windows import window_containing, windows_between
from tests.factories import feature_set, source

UTC = timezone.utc
BASE = datetime(2024, 1, 1, tzinfo=UTC)
END = BASE + timedelta(days=4)
NOW = datetime(2024, 2, 1, tzinfo=UTC)


# Three feature sets: different cadences, delays, lookbacks, key arity and types.
DAILY = feature_set("daily", keys={"k": "string"}, features={"a": "float64"},
                    source_=source("d", {"k": "string", "a": "float64"}), temporal_join_lookback="2d")
HOURLY = feature_set("hourly", keys={"k": "string"}, features={"b": "int64"},
                     source_=source("h", {"k": "string", "b": "int64"}), cadence="hourly", source_delay="1h")
PAIR = feature_set("pair", keys={"k": "string", "k2": "int64"}, features={"c": "string"},
                   source_=source("p", {"k": "string", "k2": "int64", "c": "string"}),
                   temporal_join_lookback="1d", source_delay="30m")
SETS = [DAILY, HOURLY, PAIR]
KEYS = ["u1", "u2", "u3"]


@dataclass
class Case:
    rows: dict[str, pd.DataFrame]
    observations: pd.DataFrame


@st.composite
def cases(draw) -> Case:
    minute = st.integers(0, 4 * 24 * 60 - 1)
    rows = {}
    for fs in SETS:
        n = draw(st.integers(0, 25))
        drawn = draw(st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 1), minute), min_size=n, max_size=n,
                              unique_by=lambda r: (r[0], r[1] if fs is PAIR else 0, r[2])))
        frame = pd.DataFrame(drawn, columns=["k", "k2", "m"])
        frame["ts"] = [BASE + timedelta(minutes=int(m)) for m in frame["m"]]
        if fs is not PAIR:
            frame = frame.drop_duplicates(["k", "ts"])
        values = np.arange(len(frame))
        frame["a"], frame["b"], frame["c"] = values * 1.5, values, [f"v{i}" for i in values]
        rows[fs.name] = frame.drop(columns="m")
    # Observation times: random, or exactly on a row's delay / lookback edge, or one microsecond off it.
    edges = [ts + d for f in SETS for ts in rows[f.name]["ts"]
             for d in (f.delay, *( [f.ttl] if f.ttl else [] ))]
    n_obs = draw(st.integers(1, 30))
    times = []
    for _ in range(n_obs):
        if edges and draw(st.booleans()):
            jitter = draw(st.sampled_from([timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)]))
            times.append(draw(st.sampled_from(edges)) + jitter)
        else:
            times.append(BASE + timedelta(minutes=draw(minute)))
    obs = pd.DataFrame({
        "k": draw(st.lists(st.sampled_from(KEYS + ["nobody"]), min_size=n_obs, max_size=n_obs)),
        "k2": draw(st.lists(st.integers(0, 1), min_size=n_obs, max_size=n_obs)),
        "event_timestamp": pd.to_datetime(times, utc=True),
        "label": np.arange(n_obs),
    })
    if n_obs > 1 and draw(st.booleans()):  # exact duplicate observation rows
        obs = pd.concat([obs, obs.iloc[[0]]], ignore_index=True)
    return Case(rows, obs)


def reference(case: Case) -> pd.DataFrame:
    """Row by row, straight from the definition."""
    out = case.observations.copy()
    for fs in SETS:
        rows = case.rows[fs.name]
        keys = fs.entity_names
        values = []
        for _, obs in case.observations.iterrows():
            t = obs["event_timestamp"].to_pydatetime()
            ok = rows[(rows[keys] == obs[keys]).all(axis=1) & (rows["ts"] <= t - fs.delay)]
            if fs.ttl is not None:
                ok = ok[ok["ts"] >= t - fs.ttl]
            values.append(ok.sort_values("ts").iloc[-1][fs.feature_names[0]] if len(ok) else None)
        out[fs.feature_names[0]] = values
    return out


def inference_reference(case: Case, as_of: pd.Timestamp) -> pd.DataFrame:
    """Batch inference at `as_of` by definition: the reference join with t = as_of on every
    observation row, without the time column."""
    at = Case(case.rows, case.observations.assign(event_timestamp=as_of))
    return reference(at).drop(columns="event_timestamp")


@st.composite
def instants(draw, case: Case) -> list[pd.Timestamp]:
    """Inference times worth testing: one of the case's observation times, one instant a row
    becomes available (ts + source_delay) and one a key's value expires (ts + lookback, no newer
    row available by then), each of the edges exactly or a microsecond either side."""
    available, expiring = set(), set()
    for fs in SETS:
        rows = case.rows[fs.name].sort_values("ts")
        for _, group in rows.groupby(fs.entity_names):
            times = list(group["ts"])
            for ts, following in zip(times, [*times[1:], None]):
                available.add(ts + fs.delay)
                if fs.ttl is not None and (following is None or following + fs.delay > ts + fs.ttl):
                    expiring.add(ts + fs.ttl)
    chosen = [draw(st.sampled_from(sorted(set(case.observations["event_timestamp"]))))]
    for edges in (available, expiring):
        if edges:
            jitter = draw(st.sampled_from([timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)]))
            chosen.append(pd.Timestamp(draw(st.sampled_from(sorted(edges))) + jitter))
    return list(dict.fromkeys(chosen))


def load(store: DeltaOfflineStore, case: Case) -> None:
    for fs in SETS:
        frame = case.rows[fs.name]
        keys = [w.key for w in windows_between(fs, fs.partitions.start.strftime(fs.partitions.key_format),
                                              window_containing(fs, END + timedelta(days=3)).key)]
        table = pa.table({
            **{e.name: frame[e.name].tolist() for e in fs.entities},
            "ts": pa.array(frame["ts"].tolist(), pa.timestamp("us", tz="UTC")),
            fs.feature_names[0]: frame[fs.feature_names[0]].tolist(),
            "window_key": [window_containing(fs, t).key for t in frame["ts"]],
            "created": pa.array([NOW] * len(frame), pa.timestamp("us", tz="UTC")),
        }).cast(offline_schema(fs))
        store.open(fs).replace_windows(table.to_batches(), keys)


def feature_store(root: Path, spark=None, request_features=()) -> FeatureStore:
    catalog = Catalog([CatalogEntry(fs, Path("test")) for fs in SETS], request_features)
    return FeatureStore(catalog, DeltaOfflineStore(str(root)), spark=spark)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None and numbers as Python numbers, whatever dtype an engine chose."""
    out = frame.reset_index(drop=True).copy()
    for column, kind in (("a", float), ("b", int), ("c", str)):
        out[column] = pd.Series(
            [None if v is None or (isinstance(v, float) and np.isnan(v)) else kind(v) for v in out[column]], dtype=object
        )
    return out


SPEC = ["daily:1:a", "hourly:1:b", "pair:1:c"]
