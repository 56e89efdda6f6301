"""End to end: the project CLI submits real asset backfills that a running dagster-daemon executes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import RunsFilter
from deltalake import DeltaTable

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.settings import Settings
from tests.helpers import BIN, PROJECT_DIR, dagster_env, offline_frame, running_daemon, write_source

pytestmark = pytest.mark.integration
ACCOUNTS = load_catalog(PROJECT_DIR / "feature_defs").get("accounts")


def _daemon_settings(settings: Settings) -> Settings:
    # Redis database 3: other tests flush database 0.
    return replace(settings, redis_url=settings.redis_url.rsplit("/", 1)[0] + "/3")


@pytest.fixture()
def daemon_env(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A temporary instance with a dagster-daemon running against it on this machine; DAGSTER_HOME
    points at it in this process too while the test runs (running_daemon sets and restores it)."""
    env = dagster_env(_daemon_settings(settings), tmp_path / "home")
    with running_daemon(env, tmp_path / "daemon.log"):
        yield env


def featurestore(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "featurestore"), *args], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout)


def table_windows(env: dict[str, str]) -> list[str]:
    table = DeltaTable(f"{env['FEATURESTORE_OFFLINE_URI']}/accounts/v1")
    return sorted({p["window_key"] for p in table.partitions()})


def backfill_runs(env: dict[str, str], backfill_id: str) -> list[tuple[str, str]]:
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
        return sorted((r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in runs)


def submitted_id(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("submitted backfill "))
    return line.split()[2].rstrip(":")


def test_cli_backfill_runs_in_the_daemon_then_only_missing_reruns_one_window(daemon_env: dict[str, str]) -> None:
    env = daemon_env
    first = featurestore(env, "backfill", "accounts", "--start", "2024-01-02", "--end", "2024-01-04", "--wait",
                         "--timeout", "420")
    assert first.returncode == 0, first.stdout + first.stderr
    first_id = submitted_id(first.stdout)
    assert "3/3 window(s) materialized, 0 failed" in first.stdout and "COMPLETED_SUCCESS" in first.stdout
    assert table_windows(env) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert backfill_runs(env, first_id) == [("2024-01-02", "2024-01-04")]  # single-run backfill policy

    offline = DeltaOfflineStore(env["FEATURESTORE_OFFLINE_URI"])
    kept = offline.materialized_windows(ACCOUNTS)
    offline.open(ACCOUNTS).delete_windows(["2024-01-03"])
    assert table_windows(env) == ["2024-01-02", "2024-01-04"]

    again = featurestore(env, "backfill", "accounts", "--start", "2024-01-02", "--end", "2024-01-04", "--only-missing",
                         "--wait", "--timeout", "420")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 window(s) 2024-01-03" in again.stdout
    assert backfill_runs(env, submitted_id(again.stdout)) == [("2024-01-03", "2024-01-03")]
    assert table_windows(env) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    after = offline.materialized_windows(ACCOUNTS)
    for key in ("2024-01-02", "2024-01-04"):  # untouched by the second backfill
        assert after[key]["run_id"] == kept[key]["run_id"]

    nothing = featurestore(env, "backfill", "accounts", "--start", "2024-01-02", "--end", "2024-01-04", "--only-missing")
    assert nothing.returncode == 0 and "nothing to backfill" in nothing.stdout

    status = featurestore(env, "status", "accounts", "--start", "2024-01-01", "--end", "2024-01-04", "--all")
    assert status.returncode == 0, status.stderr
    assert "accounts_v1: 4 window(s): 3 materialized, 1 missing" in status.stdout
    assert "2024-01-01       missing" in status.stdout

    # Dagster's own job backfill on the per-feature-set job runs in the same daemon, as one run per
    # window (job backfills ignore the assets' single-run policy; the README says so).
    job_backfill = subprocess.run(
        [str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", "materialize_accounts_v1",
         "--from", "2024-01-09", "--to", "2024-01-10", "--noprompt"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert job_backfill.returncode == 0, job_backfill.stdout + job_backfill.stderr
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and not {"2024-01-09", "2024-01-10"} <= set(offline.materialized_windows(ACCOUNTS)):
        time.sleep(3)
    assert table_windows(env) == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-09", "2024-01-10"]
    with DagsterInstance.get() as instance:
        runs = [r for r in instance.get_runs(RunsFilter(job_name="materialize_accounts_v1"))
                if "dagster/backfill" in r.tags and r.tags["dagster/backfill"] not in (first_id, submitted_id(again.stdout))]
        assert sorted(r.tags.get("dagster/partition") for r in runs) == ["2024-01-09", "2024-01-10"]


def test_overlapping_backfills_both_complete_without_lost_or_duplicated_rows(daemon_env: dict[str, str]) -> None:
    env = daemon_env
    one = featurestore(env, "backfill", "accounts", "--start", "2024-01-05", "--end", "2024-01-07")
    two = featurestore(env, "backfill", "accounts", "--start", "2024-01-06", "--end", "2024-01-08")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    ids = [submitted_id(one.stdout), submitted_id(two.stdout)]
    deadline = time.monotonic() + 600
    with DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            statuses = [instance.get_backfill(i).status for i in ids]
            if all(s in (BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED)
                   for s in statuses):
                break
            time.sleep(3)
        assert statuses == [BulkActionStatus.COMPLETED_SUCCESS] * 2
        # Both runs write the same rows, so the end state cannot tell whether they wrote at once:
        # their writing steps (each claims the feature set's pool) must not overlap in time.
        runs = [instance.get_runs(RunsFilter(tags={"dagster/backfill": i})) for i in ids]
        assert [len(r) for r in runs] == [1, 1]
        first, second = (pooled_step_intervals(instance, r[0].run_id) for r in runs)
    assert sorted(first) == sorted(second) == ["accounts_v1", "accounts_v1_online"], (first, second)
    overlapping = [(a, b) for a, (a_start, a_end) in first.items() for b, (b_start, b_end) in second.items()
                   if a_start < b_end and b_start < a_end]
    assert not overlapping, f"steps of the two runs wrote at the same time: {overlapping} ({first}, {second})"
    # Each window holds the accounts source rows of that day (a passthrough), once.
    rows = offline_frame(DeltaOfflineStore(env["FEATURESTORE_OFFLINE_URI"]), ACCOUNTS)
    source = DeltaTable(f"{env['FEATURESTORE_SOURCE_ROOT']}/accounts").to_pandas()
    days = ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"]
    expected = source[(source.updated_at >= pd.Timestamp(days[0], tz="UTC"))
                      & (source.updated_at < pd.Timestamp("2024-01-09", tz="UTC"))]
    expected = expected.rename(columns={"updated_at": "ts"}).assign(window_key=expected.updated_at.dt.strftime("%Y-%m-%d"))
    expected = expected.sort_values(["account_id", "ts"]).reset_index(drop=True)[list(rows.columns)]
    assert sorted(rows.window_key.unique()) == days and len(rows) > 0
    pd.testing.assert_frame_equal(rows, expected, check_dtype=False)


def pooled_step_intervals(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """When each step of the run that claims a pool ran: from its STEP_START to its last event."""
    pooled = {ACCOUNTS.key, f"{ACCOUNTS.key}_online"}
    intervals: dict[str, tuple[float, float]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key not in pooled:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            intervals[event.step_key] = (record.timestamp, record.timestamp)
        elif event.step_key in intervals and event.event_type in (DagsterEventType.STEP_SUCCESS,
                                                                   DagsterEventType.STEP_FAILURE):
            intervals[event.step_key] = (intervals[event.step_key][0], record.timestamp)
    return intervals


def test_backfill_of_windows_without_source_data_is_refused(settings: Settings, tmp_path: Path) -> None:
    env = dagster_env(settings, tmp_path / "home")
    late = featurestore(env, "backfill", "accounts", "--start", "2030-01-01", "--end", "2030-01-02")
    assert late.returncode == 1
    assert "have not closed yet" in late.stderr or "no source data yet" in late.stderr
    ahead = featurestore(env, "backfill", "accounts", "--start", "2024-05-01", "--end", "2024-05-02")
    assert ahead.returncode == 1 and "accounts_v1 have no source data yet" in ahead.stderr, ahead.stderr
    bad = featurestore(env, "backfill", "accounts", "--start", "2024-05-02", "--end", "2024-05-01")
    assert bad.returncode == 1 and "before its start" in bad.stderr


def test_waiting_backfill_exits_non_zero_when_a_window_fails(settings: Settings, tmp_path: Path) -> None:
    # A source that passes the pre-flight schema check but whose rows repeat a key: the runs start
    # and fail inside (the keys rule), which is what --wait must report.
    sources = tmp_path / "sources"
    row = {"account_id": "a1", "credit_limit": 1.0, "segment": "s", "country": "DE", "is_premium": False}
    times = pd.to_datetime(["2024-01-02 08:00", "2024-01-02 08:00", "2024-01-03 08:00", "2024-01-03 08:00"], utc=True)
    write_source(str(sources), "accounts", pd.DataFrame([{**row, "updated_at": t} for t in times]))
    env = dagster_env(replace(_daemon_settings(settings), source_root=str(sources)), tmp_path / "home")
    with running_daemon(env, tmp_path / "daemon.log"):
        result = featurestore(env, "backfill", "accounts", "--start", "2024-01-02", "--end", "2024-01-03",
                              "--wait", "--timeout", "420")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0/2 window(s) materialized, 2 failed" in result.stdout
    assert "ended COMPLETED_FAILED with 2 failed window(s)" in result.stderr
