"""The Spark join engine and batch inference with it against the brute-force reference on random
cases (hypothesis)."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from tests.join_reference import (
    NOW, SPEC, Case, cases, comparable, feature_store, inference_reference, instants, load, reference,
)


# Derandomized: the same examples every run, so a failure is never a one-off; each example costs
# a Delta write and a Spark job (about a second), hence not more of them.
@settings(max_examples=16, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_spark_engine_matches_reference(spark, tmp_path_factory, case: Case) -> None:
    root = tmp_path_factory.mktemp("spark")
    load(DeltaOfflineStore(str(root)), case)
    got = feature_store(root, spark).get_offline_features(case.observations, SPEC, engine="spark", now=NOW)
    pd.testing.assert_frame_equal(comparable(got), comparable(reference(case)), check_dtype=False)


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
