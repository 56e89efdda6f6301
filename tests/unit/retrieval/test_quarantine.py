"""Quarantined windows in retrieval (the check both engines share, run here with the local
engine on Delta tables written by delta-rs): refused like missing windows, naming the window and
the failed check, unless accepted; a passing verdict lifts the quarantine; pending is not bad."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from feature_pipelines.errors import RetrievalError
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, offline_schema
from tests.factories import feature_set

UTC = timezone.utc
SCORES = feature_set()  # daily windows from 2024-01-01, key user_id, feature x
NOW = datetime(2024, 1, 6, 12, tzinfo=UTC)  # 2024-01-06 is not complete yet


def window(day: int, x: float) -> pa.RecordBatch:
    at = datetime(2024, 1, day, 1, tzinfo=UTC)
    return pa.RecordBatch.from_pydict({
        "user_id": ["u1"], "ts": [at], "x": [x], "window_key": [f"2024-01-0{day}"], "created": [at],
    }, schema=offline_schema(SCORES))


def observed(*days_hours: tuple[int, int]) -> pd.DataFrame:
    times = [datetime(2024, 1, d, h, tzinfo=UTC) for d, h in days_hours]
    return pd.DataFrame({"user_id": ["u1"] * len(times), "event_timestamp": pd.to_datetime(times, utc=True)})


@pytest.fixture()
def store(tmp_path: Path) -> FeatureStore:
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    table = offline.open(SCORES)
    table.replace_windows([window(d, float(d)) for d in range(1, 7)], [f"2024-01-0{d}" for d in range(1, 7)])
    # 01-03 and 01-06 failed blocking checks; 01-05 is pending (its run died before the checks).
    offline.record_checks(SCORES, [f"2024-01-0{d}" for d in (1, 2, 3, 4, 6)],
                          {"2024-01-03": ["row_count_in_band"], "2024-01-06": ["expectations"]})
    return FeatureStore(Catalog([CatalogEntry(SCORES, Path("test"))]), offline)


def test_a_quarantined_window_is_refused_naming_it_and_its_check_unless_accepted(store: FeatureStore) -> None:
    obs = observed((1, 12), (4, 12))
    message = (
        "feature set scores_v1 has 1 quarantined window(s) that these observations need, whose blocking quality "
        "checks failed: 2024-01-03 (failed row_count_in_band). Fix the data and materialize them again, e.g. "
        "`featurestore materialize scores --version 1 --start 2024-01-03 --end 2024-01-03`, or use their rows as "
        "they are with accept_quarantined=True (CLI: --accept-quarantined)."
    )
    with pytest.raises(RetrievalError) as refused:
        store.get_offline_features(obs, ["scores:1:x"], engine="local", now=NOW)
    assert str(refused.value) == message
    with pytest.raises(RetrievalError, match=r"2024-01-03 \(failed row_count_in_band\)"):
        store.get_inference_features(obs[["user_id"]], ["scores:1:x"], as_of=datetime(2024, 1, 4, tzinfo=UTC), now=NOW)

    accepted = store.get_offline_features(obs, ["scores:1:x"], engine="local", now=NOW, accept_quarantined=True)
    assert accepted["x"].tolist() == [1.0, 4.0]
    as_of = store.get_inference_features(obs[["user_id"]].head(1), ["scores:1:x"], engine="local",
                                         as_of=datetime(2024, 1, 3, 12, tzinfo=UTC), now=NOW, accept_quarantined=True)
    assert as_of["x"].tolist() == [3.0]  # the quarantined window's own row
    # Observations that cannot reach it are not concerned.
    assert store.get_offline_features(observed((2, 12)), ["scores:1:x"], engine="local", now=NOW)["x"].tolist() == [2.0]


def test_an_incomplete_quarantined_window_is_refused_too_and_a_missing_one_is_named_with_it(
        store: FeatureStore) -> None:
    store.offline.record_checks(SCORES, ["2024-01-03"])  # a re-run passed: lifted
    # 01-05 is pending: it counts as materialized. 01-06 is still open, but its rows would be joined.
    with pytest.raises(RetrievalError, match=r"1 quarantined window\(s\) .*: 2024-01-06 \(failed expectations\)\. "
                                             r".*--start 2024-01-06 --end 2024-01-06"):
        store.get_offline_features(observed((6, 10)), ["scores:1:x"], engine="local", now=NOW)
    assert store.get_offline_features(observed((5, 12)), ["scores:1:x"], engine="local", now=NOW)["x"].tolist() == [5.0]

    store.offline.open(SCORES).delete_windows(["2024-01-02"])
    with pytest.raises(RetrievalError) as both:
        store.get_offline_features(observed((6, 10)), ["scores:1:x"], engine="local", now=NOW)
    assert str(both.value).startswith(
        "feature set scores_v1 is missing 1 window(s) that these observations need: 2024-01-02, and has 1 "
        "quarantined window(s) that these observations need, whose blocking quality checks failed: 2024-01-06 "
        "(failed expectations). Fix the data and materialize them again, e.g. `featurestore materialize scores "
        "--version 1 --start 2024-01-02 --end 2024-01-06`")
    with pytest.raises(RetrievalError, match=r"^feature set scores_v1 is missing 1 window\(s\) .*: 2024-01-02\. "
                                             r"Materialize them"):
        store.get_offline_features(observed((6, 10)), ["scores:1:x"], engine="local", now=NOW, accept_quarantined=True)
