"""The local join engine and batch inference with it against the brute-force reference on random
cases (hypothesis)."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from tests.join_reference import (
    NOW, SPEC, Case, cases, comparable, feature_store, inference_reference, instants, load, reference,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_local_engine_matches_reference(tmp_path_factory, case: Case) -> None:
    root = tmp_path_factory.mktemp("local")
    load(DeltaOfflineStore(str(root)), case)
    got = feature_store(root).get_offline_features(case.observations, SPEC, engine="local", now=NOW)
    pd.testing.assert_frame_equal(comparable(got), comparable(reference(case)), check_dtype=False)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), data=st.data())
def test_batch_inference_is_the_join_at_T(tmp_path_factory, case: Case, data) -> None:
    """Batch inference for entities E at T is the as-of join with t = T on every row: equal to the
    reference and to the join of the observations moved to T."""
    root = tmp_path_factory.mktemp("inference")
    load(DeltaOfflineStore(str(root)), case)
    store = feature_store(root)
    entities = case.observations.drop(columns="event_timestamp")
    for as_of in data.draw(instants(case)):
        expected = comparable(inference_reference(case, as_of))
        got = store.get_inference_features(entities, SPEC, as_of=as_of.to_pydatetime(), engine="local", now=NOW)
        assert list(got.index) == list(entities.index)
        pd.testing.assert_frame_equal(comparable(got), expected, check_dtype=False)
        joined = store.get_offline_features(case.observations.assign(event_timestamp=as_of), SPEC, engine="local", now=NOW)
        pd.testing.assert_frame_equal(comparable(joined.drop(columns="event_timestamp")), expected, check_dtype=False)
