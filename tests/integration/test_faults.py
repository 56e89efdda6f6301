"""Fault injection with real Spark, Delta, redis-server and Dagster: a process SIGKILLed in the
middle of a Delta write, between the Delta commit and the window log, or between the offline
commit and the online publish, Redis stopping mid-publish or down for a whole run. After each fault the stores are compared with a clean run:
identical, nothing lost, nothing duplicated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pytest
import redis
from deltalake import DeltaTable
from click.testing import CliRunner
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, instance_for_test

from feature_pipelines.spec.catalog import Catalog, load_catalog
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.orchestration.code_location import build_definitions
from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.errors import RetrievalError
from feature_pipelines.faults import OFFLINE_AFTER_COMMIT, OFFLINE_MID_WRITE, ONLINE_BEFORE_PUBLISH, ONLINE_MID_PUBLISH
from feature_pipelines.planning.window_status import status_windows, window_statuses
from feature_pipelines.planning.windows import windows_between
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.orchestration.dead_runs import reap_dead_runs
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.settings import Settings
from feature_pipelines.stores.offline.executor_write import RUN_FOLDER_PREFIX
from tests.helpers import PROJECT_DIR, RedisProcess, dagster_env, offline_frame

pytestmark = pytest.mark.integration


@pytest.fixture()
def own_redis(tmp_path: Path):
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


class KillWorld(NamedTuple):
    """What a killed-CLI-run test works on: settings with its own Redis, the environment of a
    fresh DAGSTER_HOME (also set in this process), the catalog, its transactions set and both stores."""

    settings: Settings
    env: dict[str, str]
    catalog: Catalog
    transactions: FeatureSet
    offline: DeltaOfflineStore
    online: RedisOnlineStore


@pytest.fixture()
def world(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_redis: RedisProcess) -> KillWorld:
    settings = replace(settings, redis_url=own_redis.url)
    env = dagster_env(settings, tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    catalog = load_catalog(settings.feature_defs_dir)
    return KillWorld(settings, env, catalog, catalog.get("transactions"), DeltaOfflineStore(settings.offline_uri),
                     RedisOnlineStore(redis.Redis.from_url(own_redis.url), own_redis.url))


def clean_rows(materialized_store: FeatureStore, feature_set: FeatureSet, first: str, last: str) -> pd.DataFrame:
    """The rows of windows `first`..`last` as a clean run computes them: the session's store,
    materialized from the same sample sources without faults (a window's rows depend only on the
    source, never on which other windows a run covers: tests/integration/test_materialize.py)."""
    keys = [w.key for w in windows_between(feature_set, first, last)]
    return offline_frame(materialized_store.offline, feature_set, keys)


def killed_cli_run(env: dict[str, str], fault: str, marker: Path, *args: str) -> int:
    """Run `featurestore materialize ...` until it reaches `fault`, then SIGKILL it with its
    Spark JVM (the whole process group), as a crashed machine would; its pid."""
    env = {**env, "FEATURESTORE_FAULT": fault, "FEATURESTORE_FAULT_MARKER": str(marker)}
    process = subprocess.Popen([sys.executable, "-m", "feature_pipelines.cli.commands", "materialize", *args], env=env,
                               cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.communicate(timeout=10)[0].decode(errors="replace") if process.poll() is not None else ""
            process.kill()
            raise AssertionError(f"the run never reached fault point {fault}:\n{output[-3000:]}")
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return process.pid


def reap_the_killed_run(instance: DagsterInstance) -> None:
    """Fail the killed CLI run and free its writer slot, as the next CLI command or the daemon's
    dead-run sensor does, and check that exactly that run was reaped."""
    reaped = reap_dead_runs(instance)
    assert [r.failed for r in reaped] == [True], reaped


def online_values(store: RedisOnlineStore, feature_set: FeatureSet, entities: list[str]) -> dict:
    return {e: (v.ts, _plain(v.features)) if v else None
            for e, v in zip(entities, store.read(feature_set, [[e] for e in entities]))}


def latest_values(offline: DeltaOfflineStore, feature_set: FeatureSet) -> dict:
    """What the online store must hold once every window is published (SEMANTICS.md): per entity,
    the ts and features of its offline row with the greatest ts. Computed with pandas from the
    Delta table, not by the publishing code."""
    (key,), ts = feature_set.entity_names, feature_set.timestamp
    rows = DeltaTable(offline.table_uri(feature_set)).to_pandas()
    latest = rows.sort_values([key, ts]).groupby(key).tail(1)
    return {row[key]: (row[ts].to_pydatetime(), _plain({f: row[f] for f in feature_set.feature_names}))
            for _, row in latest.iterrows()}


def _plain(features: dict) -> dict:
    """Feature values comparable across numpy, pandas and Python (NaN and None alike: missing)."""
    return {name: None if value is None or value != value else value.item() if hasattr(value, "item") else value
            for name, value in features.items()}


def assert_online_holds_the_latest_offline_rows(online: RedisOnlineStore, offline: DeltaOfflineStore,
                                                feature_set: FeatureSet, newer: dict | None = None) -> None:
    """Online values equal the pandas expectation, entity for entity and value for value, and
    no other entity holds a value; `newer` are values written online that must have survived."""
    expected = {**latest_values(offline, feature_set), **(newer or {})}
    assert len(expected) > 0
    assert online_values(online, feature_set, sorted(expected)) == expected
    assert online.count(feature_set) == len(expected)


def test_sigkill_before_the_delta_commit_keeps_the_previous_version_and_a_retry_matches_a_clean_run(
        spark, materialized_store: FeatureStore, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = dagster_env(settings, tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    catalog = load_catalog(settings.feature_defs_dir)
    transactions = catalog.get("transactions")
    offline = DeltaOfflineStore(settings.offline_uri)
    with DagsterInstance.get() as instance:
        materialize_range(build_definitions(settings, catalog), instance, transactions, "2024-01-01", "2024-01-04")
    version, before, log = offline.open(transactions).delta.version(), offline_frame(offline, transactions), \
        offline.materialized_windows(transactions)

    # Rewrites 01-03..04 and adds 01-05..06; killed once the executors have written the files
    # into the table's folder, before the driver commits them.
    args = ("materialize", "transactions", "--start", "2024-01-03", "--end", "2024-01-06")
    killed = killed_cli_run(env, OFFLINE_MID_WRITE, tmp_path / "fault", *args[1:])
    assert offline.open(transactions).delta.version() == version
    referenced = {p.split("/")[0] for p in
                  pa.table(offline.open(transactions).delta.get_add_actions(flatten=True)).column("path").to_pylist()}
    orphans = [p for p in Path(offline.table_uri(transactions)).glob(f"{RUN_FOLDER_PREFIX}*") if p.name not in referenced]
    assert len(orphans) == 1 and list(orphans[0].rglob("*.parquet"))  # on disk, in no Delta version
    pd.testing.assert_frame_equal(offline_frame(offline, transactions), before)
    assert offline.materialized_windows(transactions) == log

    with DagsterInstance.get() as instance:
        dead = next(r for r in instance.get_runs() if r.status == DagsterRunStatus.STARTED)  # what the kill left

    # The retry: the same command again, with no manual step. It finds the killed run (its process
    # gone), fails it, frees its writer slot and completes.
    retry = CliRunner().invoke(featurestore, list(args), env=env)
    assert retry.exit_code == 0, retry.output
    assert (f"note: run {dead.run_id} (materialize_transactions_v1) was killed (its process {killed} on this "
            "machine, gone): marked it failed and freed its writer slots.") in retry.output
    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(dead.run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert failure.dagster_event.message.startswith(f"The run was killed: its process {killed} on this machine")
        assert [r.status for r in instance.get_runs()] == [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                                           DagsterRunStatus.SUCCESS]
    pd.testing.assert_frame_equal(offline_frame(offline, transactions),
                                  clean_rows(materialized_store, transactions, "2024-01-01", "2024-01-06"))
    assert sorted(offline.materialized_windows(transactions)) == [f"2024-01-0{d}" for d in range(1, 7)]


def test_sigkill_between_the_delta_commit_and_the_window_log_keeps_status_and_data_in_agreement(
        spark, materialized_store: FeatureStore, world: KillWorld, tmp_path: Path, own_redis: RedisProcess) -> None:
    settings, env, catalog, transactions, offline, online = world
    defs = build_definitions(settings, catalog)
    with DagsterInstance.get() as instance:
        materialize_range(defs, instance, transactions, "2024-01-01", "2024-01-02")
    version = offline.open(transactions).delta.version()

    # Rewrites 01-02 (checked and published) and adds 01-03..04; killed once their Delta commit
    # is made, before the window log lists them.
    killed_cli_run(env, OFFLINE_AFTER_COMMIT, tmp_path / "fault", "transactions", "--start", "2024-01-02", "--end", "2024-01-04")
    table = offline.open(transactions)
    assert table.delta.version() == version + 1
    held = table.read(columns=["window_key"]).column("window_key").value_counts().to_pylist()
    logged = offline.materialized_windows(transactions)
    assert {k: e["rows"] for k, e in logged.items()} == {c["values"]: c["counts"] for c in held}
    assert {k: e["checks"] for k, e in logged.items()} == {
        "2024-01-01": "passed", "2024-01-02": "pending", "2024-01-03": "pending", "2024-01-04": "pending"}
    now = datetime(2024, 3, 1, tzinfo=timezone.utc)
    statuses = window_statuses(transactions, status_windows(transactions, now, "2024-01-01", "2024-01-05"), logged, None)
    assert [s.status for s in statuses] == ["materialized"] * 4 + ["missing"]
    retrieval = FeatureStore(catalog, offline)
    observations = pd.DataFrame({"account_id": ["a000001"], "event_timestamp": pd.to_datetime(["2024-01-04 23:00"], utc=True)})
    retrieval.get_offline_features(observations, ["transactions:1:amount_sum_1d"], engine="local", now=now)
    with pytest.raises(RetrievalError, match=r"is missing 1 window\(s\)"):
        retrieval.get_offline_features(observations.assign(event_timestamp=pd.Timestamp("2024-01-05 23:00", tz="UTC")),
                                       ["transactions:1:amount_sum_1d"], engine="local", now=now)
    # Unchecked, so never published by a repair: neither the new windows nor 01-02's new rows.
    assert offline.publishable_windows(transactions) == ["2024-01-01"]

    with DagsterInstance.get() as instance:  # the next scheduled window, then a re-run of the killed ones
        reap_the_killed_run(instance)
        later = materialize_range(defs, instance, transactions, "2024-01-05", "2024-01-05")
        assert later.online["repaired_windows"] == "none"
        assert online.published_windows(transactions) == {"2024-01-01", "2024-01-02", "2024-01-05"}
        materialize_range(defs, instance, transactions, "2024-01-02", "2024-01-04")

    days = [f"2024-01-0{d}" for d in range(1, 6)]
    assert offline.publishable_windows(transactions) == days
    pd.testing.assert_frame_equal(offline_frame(offline, transactions),
                                  clean_rows(materialized_store, transactions, "2024-01-01", "2024-01-05"))
    assert_online_holds_the_latest_offline_rows(online, offline, transactions)


def test_killed_between_offline_commit_and_online_publish_is_repaired_by_the_next_run(
        spark, materialized_store: FeatureStore, world: KillWorld, tmp_path: Path, own_redis: RedisProcess) -> None:
    settings, env, catalog, transactions, offline, online = world

    killed_cli_run(env, ONLINE_BEFORE_PUBLISH, tmp_path / "fault", "transactions", "--start", "2024-01-01", "--end", "2024-01-03")
    assert sorted(offline.publishable_windows(transactions)) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert online.count(transactions) == 0

    with DagsterInstance.get() as instance:  # the next scheduled window
        reap_the_killed_run(instance)
        outcome = materialize_range(build_definitions(settings, catalog), instance, transactions, "2024-01-04", "2024-01-04")
    assert outcome.online["repaired_windows"] == "2024-01-01, 2024-01-02, 2024-01-03"

    pd.testing.assert_frame_equal(offline_frame(offline, transactions),
                                  clean_rows(materialized_store, transactions, "2024-01-01", "2024-01-04"))
    assert_online_holds_the_latest_offline_rows(online, offline, transactions)


def test_redis_stopping_mid_publish_is_retried_without_loss_or_duplication(
        spark, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_redis: RedisProcess) -> None:
    settings = replace(settings, redis_url=own_redis.url)
    catalog = load_catalog(settings.feature_defs_dir)
    transactions = catalog.get("transactions")
    online = RedisOnlineStore(redis.Redis.from_url(own_redis.url), own_redis.url)
    defs = build_definitions(settings, catalog)
    # An entity already holds a newer value (from a later window): it must survive the retries.
    future = pd.Timestamp("2030-01-01", tz="UTC")
    newer = {"account_id": ["a000001"], "ts": [future], **{f: [99.0] for f in transactions.feature_names}}
    online.publish(transactions, pa.Table.from_pandas(pd.DataFrame(newer), preserve_index=False).to_batches())

    marker = tmp_path / "fault"
    monkeypatch.setenv("FEATURESTORE_FAULT", ONLINE_MID_PUBLISH)
    monkeypatch.setenv("FEATURESTORE_FAULT_MARKER", str(marker))

    def break_redis_then_recover(instance: DagsterInstance) -> None:
        try:
            deadline = time.monotonic() + 240
            while not marker.exists():
                assert time.monotonic() < deadline, "the publish step never reached its fault point"
                time.sleep(0.05)
            own_redis.stop()        # Redis goes away in the middle of the publish step
            marker.unlink()         # the write fails; Dagster retries the step 2 s after the failure
            while not publish_retries(instance):
                assert time.monotonic() < deadline, "the failed publish was never up for retry"
                time.sleep(0.05)
            own_redis.start()       # back, with its append-only data, once the failure is recorded
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    def publish_retries(instance: DagsterInstance) -> list:
        runs = instance.get_runs()
        return list(instance.all_logs(runs[0].run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)) if runs else []

    errors: list[BaseException] = []
    with instance_for_test() as instance:
        helper = threading.Thread(target=break_redis_then_recover, args=(instance,), daemon=True)
        helper.start()
        outcome = materialize_range(defs, instance, transactions, "2024-01-01", "2024-01-03")
        retries = publish_retries(instance)
        helper.join(timeout=30)
    assert not errors, errors
    # Usually one retry; more if Redis took longer than the retry delay to come back.
    assert retries and {r.step_key for r in retries} == {"transactions_v1_online"}
    assert all("publishing to Redis" in r.dagster_event.event_specific_data.error.to_string() for r in retries)
    assert outcome.online["online_keys_written"] > 0

    offline = DeltaOfflineStore(settings.offline_uri)
    survivor = (future.to_pydatetime(), {f: 99.0 for f in transactions.feature_names})
    assert_online_holds_the_latest_offline_rows(online, offline, transactions, newer={"a000001": survivor})
    assert online.read(transactions, [["a000001"]])[0].ts == future.to_pydatetime()  # newer wins


def test_redis_down_for_a_whole_run_fails_clearly_keeps_offline_and_publishes_later(
        spark, settings: Settings, tmp_path: Path, own_redis: RedisProcess) -> None:
    # Redis stays down through every retry: short retry delays (FEATURESTORE_PUBLISH_RETRY_DELAY)
    # cut the 14 s of default back-off without changing what is checked.
    settings = replace(settings, redis_url=own_redis.url, publish_retry_delay=0.1)
    catalog = load_catalog(settings.feature_defs_dir)
    transactions = catalog.get("transactions")
    defs = build_definitions(settings, catalog)
    offline = DeltaOfflineStore(settings.offline_uri)
    own_redis.stop()
    from feature_pipelines.errors import OnlineStoreError

    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(OnlineStoreError, match=r"publishing to Redis redis://127.0.0.1:\d+/0 failed: .*"
                                                   r"The offline store is written; re-run the window"):
            materialize_range(defs, instance, transactions, "2024-01-01", "2024-01-02")
        assert sorted(offline.materialized_windows(transactions)) == ["2024-01-01", "2024-01-02"]
        own_redis.start()
        later = materialize_range(defs, instance, transactions, "2024-01-03", "2024-01-03")
    assert later.online["repaired_windows"] == "2024-01-01, 2024-01-02"
    online = RedisOnlineStore(redis.Redis.from_url(own_redis.url), own_redis.url)
    assert_online_holds_the_latest_offline_rows(online, offline, transactions)
