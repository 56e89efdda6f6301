"""Asset checks on real runs: good windows pass; a row-count collapse and a null spike fail and,
being blocking, keep their windows out of Redis while the offline rows and the results stay; those
windows are quarantined (status, the asset's window status, retrieval with either engine, the
dataset CLI) until a run with good data lifts it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import json
import re

import pandas as pd
import pytest
from datetime import datetime, timezone

from click.testing import CliRunner
from dagster import AssetKey, DagsterEventType, build_run_status_sensor_context, build_sensor_context, instance_for_test
from dagster._core.test_utils import freeze_time  # Dagster's own clock; Spark and Delta keep real time

from feature_pipelines import Expectation, Quality
from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.errors import RetrievalError
from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.orchestration.automation import check_failure_sensor, failure_sensor
from feature_pipelines.orchestration.code_location import build_definitions, materialize_job_name
from feature_pipelines.orchestration.freshness import FRESHNESS_SENSOR, deadline_cron
from feature_pipelines.orchestration.notifier import FileNotifier
from feature_pipelines.orchestration.window_states import feature_set_statuses
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.settings import Settings
from tests.factories import feature_set
from tests.helpers import dagster_env, write_source

pytestmark = pytest.mark.integration

SCORES = feature_set(features={"score": "float64"}, start="2024-03-01",
                     quality=Quality(expectations={"score": Expectation(max_null_rate=0.1, min=0, max=1)}))
USERS = [f"u{i}" for i in range(40)]


def day(date: str, users: list[str], score=0.5) -> pd.DataFrame:
    times = pd.date_range(f"{date} 01:00", periods=len(users), freq="min", tz="UTC")
    return pd.DataFrame({"user_id": users, "score": score, "event_time": times})


def run(defs, instance, first: str, last: str, now: str):
    """Materialize windows first..last with Dagster's clock at `now` (freshness depends on it)."""
    job = defs.resolve_job_def(materialize_job_name(SCORES))
    with freeze_time(datetime.fromisoformat(now).replace(tzinfo=timezone.utc)):
        return job.execute_in_process(instance=instance, tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
                                      raise_on_error=False)


def checks_of(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def window_status(result) -> str:
    """The `window_status` metadata of the run's materialization of the offline asset."""
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey([SCORES.key])]
    return event.materialization.metadata["window_status"].value


def observations(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [u for u, _ in rows], "event_timestamp": pd.to_datetime([t for _, t in rows], utc=True)})


def notify(sensor_def, instance, run_id: str, path: Path) -> list[dict]:
    """Run a run-status sensor on a finished run; return the notifications written so far."""
    run_record = instance.get_run_by_id(run_id)
    kind = DagsterEventType.RUN_SUCCESS if run_record.is_success else DagsterEventType.RUN_FAILURE
    event = next(iter(instance.all_logs(run_id, of_type=kind))).dagster_event
    context = build_run_status_sensor_context(sensor_name=sensor_def.name, dagster_instance=instance,
                                              dagster_run=run_record, dagster_event=event)
    sensor_def(context.for_run_failure() if kind == DagsterEventType.RUN_FAILURE else context)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


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

    notifications = tmp_path / "notifications.jsonl"
    with instance_for_test() as instance:
        good = run(defs, instance, "2024-03-01", "2024-03-07", now="2024-03-08 08:00")
        assert good.success and checks_of(good) == {
            "keys_unique_and_not_null": True, "schema_matches_spec": True, "row_count_in_band": True, "expectations": True,
            "freshness_check": True,
        }
        published = online_store.read(SCORES, [["u0"], ["u39"]])
        assert [v.features["score"] for v in published] == pytest.approx([0.7, 0.7])

        collapsed = run(defs, instance, "2024-03-08", "2024-03-08", now="2024-03-09 08:00")
        assert not collapsed.success
        assert checks_of(collapsed)["row_count_in_band"] is False and checks_of(collapsed)["expectations"] is True
        evaluation = next(e for e in collapsed.get_asset_check_evaluations() if e.check_name == "row_count_in_band")
        assert "2024-03-08: 5 rows, expected 8..200" in evaluation.metadata["summary"].value
        # Offline: written and inspectable. Online: untouched (u0 keeps the 03-07 value).
        assert offline.materialized_windows(SCORES)["2024-03-08"]["rows"] == 5
        assert online_store.read(SCORES, [["u0"]])[0].features["score"] == pytest.approx(0.7)
        assert instance.get_latest_materialization_event(AssetKey(["scores_v1_online"])).run_id == good.run_id
        # The failed run is notified, naming the check that failed and the window.
        sent = notify(failure_sensor(FileNotifier(notifications)), instance, collapsed.run_id, notifications)
        assert len(sent) == 1 and sent[0]["title"] == "Run failed: materialize_scores_v1"
        assert "check scores_v1:row_count_in_band failed (ERROR): row count out of band in 1 window(s): 2024-03-08: 5 rows" in sent[0]["text"]

        spiked = run(defs, instance, "2024-03-09", "2024-03-09", now="2024-03-10 08:00")
        assert not spiked.success and checks_of(spiked)["expectations"] is False
        evaluation = next(e for e in spiked.get_asset_check_evaluations() if e.check_name == "expectations")
        assert "2024-03-09: null rate 50.0% > 10.0%" in evaluation.metadata["summary"].value
        assert online_store.read(SCORES, [["u1"]])[0].features["score"] == pytest.approx(0.7)
        # The check results are stored on the instance, for the UI.
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [next(iter(defs.resolve_asset_graph().asset_check_keys))]
        )
        assert record

        # Both windows are quarantined. Retrieval, with either engine, refuses them like missing
        # windows, naming each with its failed check, unless the caller accepts them.
        quarantined = "2024-03-08 (failed row_count_in_band); 2024-03-09 (failed expectations)"
        retrieval = FeatureStore(Catalog([CatalogEntry(SCORES, Path("test"))]), offline, spark=spark,
                                 source_root=str(sources))
        wanted = observations(("u0", "2024-03-08 12:00"), ("u1", "2024-03-09 12:00"))
        for engine in ("local", "spark"):
            with pytest.raises(RetrievalError, match=rf"has 2 quarantined window\(s\) .*: {re.escape(quarantined)}\. "):
                retrieval.get_offline_features(wanted, ["scores:1:score"], engine=engine)
            accepted = retrieval.get_offline_features(wanted, ["scores:1:score"], engine=engine, accept_quarantined=True)
            assert accepted["score"].tolist() == pytest.approx([0.9, 0.8]), engine
        # The asset's window status (each run's own verdicts included) and `status` show them,
        # although Dagster only knows that their runs failed.
        assert "| quarantined | 1 | 2024-03-08 (failed row_count_in_band) |" in window_status(collapsed)
        assert f"| quarantined | 2 | {quarantined} |" in window_status(spiked)
        now = datetime(2024, 3, 10, 8, tzinfo=timezone.utc)
        statuses = feature_set_statuses(instance, SCORES, offline, str(sources), None, now, "2024-03-07", "2024-03-09")
        assert [(s.key, s.status, s.failed_checks) for s in statuses] == [
            ("2024-03-07", "materialized", ()), ("2024-03-08", "quarantined", ("row_count_in_band",)),
            ("2024-03-09", "quarantined", ("expectations",))]
        # The CLI: `status`, and the training-set command with and without --accept-quarantined.
        (tmp_path / "defs" / "scores.py").write_text("from tests.integration.test_checks import SCORES  # noqa: F401\n")
        (tmp_path / "defs" / "retrieval_specs").mkdir()
        (tmp_path / "defs" / "retrieval_specs" / "scores_model.yaml").write_text("features:\n  - scores:1:score\n")
        wanted.to_parquet(tmp_path / "observations.parquet")
        env = {**dagster_env(settings, tmp_path / "home"), "FEATURE_DEFS_DIR": str(tmp_path / "defs")}
        shown = CliRunner().invoke(featurestore, ["status", "scores", "--start", "2024-03-07", "--end", "2024-03-09"],
                                   env=env)
        assert shown.output.splitlines() == ["scores_v1: 3 window(s): 1 materialized, 2 quarantined",
                                             f"  quarantined: {quarantined}"], shown.output
        training = ["training-set", "scores_model", "--observations", str(tmp_path / "observations.parquet"),
                    "--output", str(tmp_path / "train.parquet")]
        refused = CliRunner().invoke(featurestore, training, env=env)
        assert refused.exit_code == 1 and f": {quarantined}. " in refused.output, refused.output
        built = CliRunner().invoke(featurestore, [*training, "--accept-quarantined"], env=env)
        assert built.exit_code == 0, built.output
        assert pd.read_parquet(tmp_path / "train.parquet")["score"].tolist() == pytest.approx([0.9, 0.8])

        # Re-materializing 03-08 from good data passes its checks and lifts its quarantine; 03-09
        # stays quarantined, so the publish does not repair it into Redis.
        frames[7] = day("2024-03-08", USERS, score=0.9)
        write_source(sources, "events", pd.concat(frames, ignore_index=True))
        fixed = run(defs, instance, "2024-03-08", "2024-03-08", now="2024-03-09 08:00")
        assert fixed.success and "| quarantined | 1 | 2024-03-09 (failed expectations) |" in window_status(fixed)
        assert [s.status for s in feature_set_statuses(instance, SCORES, offline, str(sources), None, now,
                                                       "2024-03-08", "2024-03-09")] == ["materialized", "quarantined"]
        assert retrieval.get_offline_features(observations(("u9", "2024-03-08 12:00")), ["scores:1:score"],
                                              engine="local")["score"].tolist() == pytest.approx([0.9])
        assert online_store.read(SCORES, [["u1"]])[0].features["score"] == pytest.approx(0.9)

    # A source whose column changed type is refused before anything is written.
    broken = pd.concat(frames, ignore_index=True).assign(score=lambda f: f["score"].astype(str))
    write_source(sources, "events", broken)
    with instance_for_test() as instance:
        failed = run(defs, instance, "2024-03-10", "2024-03-10", now="2024-03-11 08:00")
    assert not failed.success and "2024-03-10" not in offline.materialized_windows(SCORES)


def test_freshness_check_fails_when_a_deadline_passes_and_is_notified(spark, settings: Settings, tmp_path: Path) -> None:
    """Default freshness: 1h delay + a quarter of a day = 07:00 UTC the day after a window closes."""
    assert deadline_cron(SCORES) == "0 7 * * *"
    sources = tmp_path / "sources"
    write_source(sources, "events", pd.concat([day(f"2024-03-0{d}", USERS) for d in range(1, 5)], ignore_index=True))
    settings = replace(settings, source_root=str(sources), feature_defs_dir=tmp_path / "defs")
    (tmp_path / "defs").mkdir()
    defs = build_definitions(settings, Catalog([CatalogEntry(SCORES, Path("test"))]))
    freshness_key = next(k for k in defs.resolve_asset_graph().asset_check_keys if k.name == "freshness_check")
    sensor_def = defs.resolve_sensor_def(FRESHNESS_SENSOR)
    notifications = tmp_path / "notifications.jsonl"
    checks_sensor = check_failure_sensor(FileNotifier(notifications))

    def evaluate_sensor(now: str):
        with freeze_time(datetime.fromisoformat(now).replace(tzinfo=timezone.utc)):
            return sensor_def.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))

    def run_checks(keys, now: str):
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=set(keys), asset_selection=set())
        with freeze_time(datetime.fromisoformat(now).replace(tzinfo=timezone.utc)):
            return job.execute_in_process(instance=instance)

    with instance_for_test() as instance:
        # Windows through 03-03, run on 03-04 at 07:30: 03-03 was due at 07:00 and is there.
        fresh = run(defs, instance, "2024-03-01", "2024-03-03", now="2024-03-04 07:30")
        assert fresh.success and checks_of(fresh)["freshness_check"] is True
        assert notify(checks_sensor, instance, fresh.run_id, notifications) == []

        # Fresh until the next deadline: before it the sensor has nothing to evaluate.
        assert evaluate_sensor("2024-03-05 06:59").run_requests == []
        # After it, the sensor asks for the check, which finds 03-04 missing and is notified.
        requests = evaluate_sensor("2024-03-05 07:01").run_requests
        assert [list(r.asset_check_keys) for r in requests] == [[freshness_key]]
        overdue = run_checks(requests[0].asset_check_keys, now="2024-03-05 07:01")
        [evaluation] = overdue.get_asset_check_evaluations()
        assert overdue.success and not evaluation.passed
        assert "expected partition 2024-03-04 to have arrived" in evaluation.description
        [sent] = notify(checks_sensor, instance, overdue.run_id, notifications)
        assert sent["title"] == "1 check(s) failed: __ASSET_JOB" and sent["details"]["checks"] == ["scores_v1:freshness_check"]
        assert "check scores_v1:freshness_check failed (ERROR)" in sent["text"] and "2024-03-04" in sent["text"]
        # A failed check is not re-run by the sensor (the next materialization re-evaluates it).
        assert evaluate_sensor("2024-03-05 07:30").run_requests == []

        caught_up = run(defs, instance, "2024-03-04", "2024-03-04", now="2024-03-05 07:40")
        assert caught_up.success and checks_of(caught_up)["freshness_check"] is True
