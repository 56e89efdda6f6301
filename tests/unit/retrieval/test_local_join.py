"""The local join engine against the brute-force reference on random cases (hypothesis)."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings

from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from tests.join_reference import NOW, SPEC, Case, cases, comparable, feature_store, load, reference


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_local_engine_matches_reference(tmp_path_factory, case: Case) -> None:
    root = tmp_path_factory.mktemp("local")
    load(DeltaOfflineStore(str(root)), case)
    got = feature_store(root).get_offline_features(case.observations, SPEC, engine="local", now=NOW)
    pd.testing.assert_frame_equal(comparable(got), comparable(reference(case)), check_dtype=False)
