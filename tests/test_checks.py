"""Asset checks on real runs: good windows pass; a row-count collapse and a null spike fail and,
being blocking, keep their windows out of Redis while the offline rows and the results stay."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, instance_for_test

from feature_pipelines import Entity, Expectation, Feature, FeatureSet, Partitions, Quality, Source
from feature_pipelines.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.catalog import Catalog, CatalogEntry
from feature_pipelines.code_location import build_definitions, materialize_job_name
from feature_pipelines.offline_store import DeltaOfflineStore
from feature_pipelines.online_store import RedisOnlineStore
from feature_pipelines.settings import Settings
from tests.conftest import write_source

pytestmark = pytest.mark.integration

SCORES = FeatureSet(
    name="scores", version=1, entities=[Entity("user_id")],
    source=Source(name="events", path="events", timestamp="event_time",
                  columns={"user_id": "string", "score": "float64", "event_time": "timestamp"}),
    features=[Feature("score", "float64")], partitions=Partitions("daily", start="2024-03-01"),
    quality=Quality(expectations={"score": Expectation(max_null_rate=0.1, min=0, max=1)}),
)
USERS = [f"u{i}" for i in range(40)]


def day(date: str, users: list[str], score=0.5) -> pd.DataFrame:
    times = pd.date_range(f"{date} 01:00", periods=len(users), freq="min", tz="UTC")
    return pd.DataFrame({"user_id": users, "score": score, "event_time": times})


def run(defs, instance, first: str, last: str):
    job = defs.resolve_job_def(materialize_job_name(SCORES))
    return job.execute_in_process(instance=instance, tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
                                  raise_on_error=False)


def checks_of(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_blocking_checks_keep_bad_windows_out_of_redis(spark, settings: Settings, tmp_path: Path,
                                                       online_store: RedisOnlineStore) -> None:
    sources = tmp_path / "sources"
    collapse = day("2024-03-08", USERS[:5], score=0.9)  # 5 rows after days of 40
    spike = day("2024-03-09", USERS, score=0.8)
    spike.loc[::2, "score"] = None  # half the scores missing
    frames = [day(f"2024-03-0{d}", USERS, score=0.1 * d) for d in range(1, 8)] + [collapse, spike]
    write_source(sources, "events", pd.concat(frames, ignore_index=True))
    settings = replace(settings, source_root=str(sources), feature_defs_dir=tmp_path / "defs")
    (tmp_path / "defs").mkdir()
    defs = build_definitions(settings, Catalog([CatalogEntry(SCORES, Path("test"))]))
    offline = DeltaOfflineStore(settings.offline_uri)

    with instance_for_test() as instance:
        good = run(defs, instance, "2024-03-01", "2024-03-07")
        assert good.success and checks_of(good) == {
            "keys_unique_and_not_null": True, "schema_matches_spec": True, "row_count_in_band": True, "expectations": True,
        }
        published = online_store.read(SCORES, [["u0"], ["u39"]])
        assert [v.features["score"] for v in published] == pytest.approx([0.7, 0.7])

        collapsed = run(defs, instance, "2024-03-08", "2024-03-08")
        assert not collapsed.success
        assert checks_of(collapsed)["row_count_in_band"] is False and checks_of(collapsed)["expectations"] is True
        evaluation = next(e for e in collapsed.get_asset_check_evaluations() if e.check_name == "row_count_in_band")
        assert "2024-03-08: 5 rows, expected 8..200" in evaluation.metadata["summary"].value
        # Offline: written and inspectable. Online: untouched (u0 keeps the 03-07 value).
        assert offline.materialized_windows(SCORES)["2024-03-08"]["rows"] == 5
        assert online_store.read(SCORES, [["u0"]])[0].features["score"] == pytest.approx(0.7)
        assert instance.get_latest_materialization_event(AssetKey(["scores_v1_online"])).run_id == good.run_id

        spiked = run(defs, instance, "2024-03-09", "2024-03-09")
        assert not spiked.success and checks_of(spiked)["expectations"] is False
        evaluation = next(e for e in spiked.get_asset_check_evaluations() if e.check_name == "expectations")
        assert "2024-03-09: null rate 50.0% > 10.0%" in evaluation.metadata["summary"].value
        assert online_store.read(SCORES, [["u1"]])[0].features["score"] == pytest.approx(0.7)
        # The check results are stored on the instance, for the UI.
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [next(iter(defs.resolve_asset_graph().asset_check_keys))]
        )
        assert record

    # A source whose column changed type is refused before anything is written.
    broken = pd.concat(frames, ignore_index=True).assign(score=lambda f: f["score"].astype(str))
    write_source(sources, "events", broken)
    with instance_for_test() as instance:
        failed = run(defs, instance, "2024-03-10", "2024-03-10")
    assert not failed.success and "2024-03-10" not in offline.materialized_windows(SCORES)
