"""The Spark join engine and batch inference with it against the brute-force reference on random
cases (hypothesis), and request-time features computed by it like by the local engine."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from feature_pipelines import RetrievalSpec, request_feature
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from tests.join_reference import (
    NOW, SETS, SPEC, Case, cases, comparable, feature_store, inference_reference, instants, load, reference,
)


# Request features over the reference sets' features (a float64, b int64, c string) and two request
# fields; `echo` shows every input exactly as the function got it (types included).
@request_feature(request={"amount": "float64", "note": "string"}, features=["a", "b", "c"], output="string")
def echo(amount, note, a, b, c):
    return repr((amount, note, a, b, c))


@request_feature(request={"amount": "float64"}, features=["a"], output="float64")
def scaled(amount, a):
    return None if amount is None or a is None else amount * a


@request_feature(features=["b"], output="int64")
def b_next(b):
    return None if b is None else b + 1


@request_feature(request={"note": "string"}, output="bool")
def has_note(note):
    return None if note is None else note != ""


REQUEST = [echo, scaled, b_next, has_note]
OUTPUTS = [f.name for f in REQUEST]
WITH_REQUEST = RetrievalSpec.of(SPEC, name="with_request", request_features=[f.name for f in REQUEST])


def _plain(value, kind):
    """A reference value as the function must get it: None for nulls (NaN too), else of its type."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else kind(value)


def _expected(case: Case) -> pd.DataFrame:
    """The reference join, then each function called on plain Python values, row by row."""
    out = reference(case)
    inputs = [dict(amount=_plain(amount, float), note=note, a=_plain(a, float), b=_plain(b, int), c=c)
              for amount, note, a, b, c in zip(out["amount"], out["note"], out["a"], out["b"], out["c"])]
    for feature in REQUEST:
        out[feature.name] = [feature(**{p: row[p] for p in feature.parameters}) for row in inputs]
    return out


def _outputs(frame: pd.DataFrame) -> list[tuple]:
    kinds = {"echo": str, "scaled": float, "b_next": int, "has_note": bool}
    return list(zip(*([_plain(v, kind) for v in frame[name]] for name, kind in kinds.items())))


@st.composite
def _examples(draw) -> Case:
    """A random case whose observations also carry random request fields (nulls, NaN, empty strings)."""
    case = draw(cases())
    rows = len(case.observations)
    case.observations["amount"] = draw(st.lists(st.one_of(
        st.none(), st.just(math.nan), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-50, 50).map(float)),
        min_size=rows, max_size=rows))
    case.observations["note"] = draw(st.lists(st.one_of(st.none(), st.just(""), st.text("xyz", max_size=3)),
                                              min_size=rows, max_size=rows))
    return case


def _together(examples: list[Case]) -> Case:
    """The examples as one case: example i's keys `k` become "i/k", so that no example can see
    another's rows, and its observations follow those of example i - 1."""
    def together(frames: list[pd.DataFrame]) -> pd.DataFrame:
        tagged = [frame.assign(k=[f"{i}/{k}" for k in frame["k"]]) for i, frame in enumerate(frames)]
        return pd.concat([frame for frame in tagged if len(frame)] or tagged[:1], ignore_index=True)
    return Case({fs.name: together([case.rows[fs.name] for case in examples]) for fs in SETS},
                together([case.observations for case in examples]))


def _no_rows() -> Case:
    """Feature tables without a single row (every feature null), which a batch of random
    examples would almost never give."""
    empty = pd.DataFrame({"k": pd.Series([], dtype=object), "k2": pd.Series([], dtype="int64"),
                          "ts": pd.Series([], dtype="datetime64[ns, UTC]"), "a": pd.Series([], dtype=float),
                          "b": pd.Series([], dtype="int64"), "c": pd.Series([], dtype=object)})
    observations = pd.DataFrame({"k": ["u1", "nobody"], "k2": [0, 1], "event_timestamp": pd.to_datetime(
        ["2024-01-02", "2024-01-03"], utc=True), "label": [0, 1], "amount": [None, 2.5], "note": ["", None]})
    return Case({fs.name: empty for fs in SETS}, observations)


# Derandomized: the same examples every run, so a failure is never a one-off. A Spark job costs
# seconds whatever its size, so each run joins a batch of 8 random examples (40 in all) at once;
# the tagged keys keep them apart and each is compared on its own.
@settings(max_examples=5, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(examples=st.lists(_examples(), min_size=8, max_size=8))
@example(examples=[_no_rows()])
def test_spark_engine_matches_reference(spark, tmp_path_factory, examples: list[Case]) -> None:
    """The join, and request-time features on it: on random request fields (nulls, NaN, empty
    strings) and joined features with nulls, the Spark and the local engine both give the reference
    join with each function called on plain values (the Spark engine on stored observations, where
    the executors compute them, is in integration/test_retrieval.py)."""
    case = _together(examples)
    root = tmp_path_factory.mktemp("spark")
    load(DeltaOfflineStore(str(root)), case)
    store = feature_store(root, spark, REQUEST)
    expected = _expected(case)
    ends = np.cumsum([len(e.observations) for e in examples])
    for engine in ("spark", "local"):
        got = store.get_offline_features(case.observations, WITH_REQUEST, engine=engine, now=NOW)
        assert list(got.columns) == [*expected.columns]  # the request features after the fetched ones
        assert len(got) == len(expected), engine
        for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
            part, want = got.iloc[start:end], expected.iloc[start:end]
            pd.testing.assert_frame_equal(comparable(part.drop(columns=OUTPUTS)), comparable(want.drop(columns=OUTPUTS)),
                                          check_dtype=False, obj=f"{engine} engine, example {i}")
            assert _outputs(part) == _outputs(want), (engine, i)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), data=st.data())
def test_spark_batch_inference_is_the_join_at_T(spark, tmp_path_factory, case: Case, data) -> None:
    """Batch inference with the Spark engine is the reference join with t = T on every row (the
    local engine's is tested on more cases in unit/retrieval/test_local_join.py)."""
    root = tmp_path_factory.mktemp("inference")
    load(DeltaOfflineStore(str(root)), case)
    as_of = data.draw(instants(case))[-1]  # an edge, when the case has rows
    entities = case.observations.drop(columns="event_timestamp")
    got = feature_store(root, spark).get_inference_features(entities, SPEC, as_of=as_of.to_pydatetime(), engine="spark", now=NOW)
    assert list(got.index) == list(entities.index)
    pd.testing.assert_frame_equal(comparable(got), comparable(inference_reference(case, as_of)), check_dtype=False)

