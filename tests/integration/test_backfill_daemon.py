"""End to end: the project CLI submits real asset backfills that a running dagster-daemon executes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import RunsFilter
from deltalake import DeltaTable

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.settings import Settings
from tests.helpers import BIN, PROJECT_DIR, dagster_env, running_daemon

pytestmark = pytest.mark.integration
ACCOUNTS = load_catalog(PROJECT_DIR / "feature_defs").get("accounts")


def _daemon_settings(settings: Settings) -> Settings:
    # Redis database 3: other tests flush database 0.
    return replace(settings, redis_url=settings.redis_url.rsplit("/", 1)[0] + "/3")


@pytest.fixture()
def daemon_env(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A temporary instance with a dagster-daemon running against it on this machine."""
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
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
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

    # Dagster's own job backfill on the per-feature-set job runs in the same daemon.
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


def test_overlapping_backfills_both_complete_without_lost_or_duplicated_rows(daemon_env: dict[str, str]) -> None:
    env = daemon_env
    one = featurestore(env, "backfill", "accounts", "--start", "2024-01-05", "--end", "2024-01-07")
    two = featurestore(env, "backfill", "accounts", "--start", "2024-01-06", "--end", "2024-01-08")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    ids = [submitted_id(one.stdout), submitted_id(two.stdout)]
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    deadline = time.monotonic() + 600
    with DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            statuses = [instance.get_backfill(i).status for i in ids]
            if all(s in (BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED)
                   for s in statuses):
                break
            time.sleep(3)
    assert statuses == [BulkActionStatus.COMPLETED_SUCCESS] * 2
    rows = DeltaOfflineStore(env["FEATURESTORE_OFFLINE_URI"]).open(ACCOUNTS).read().to_pandas()
    assert sorted(rows["window_key"].unique()) == ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"]
    assert not rows.duplicated(["account_id", "ts"]).any()
    # Each window holds what a single clean run writes: the accounts source rows of that day.
    logged = DeltaOfflineStore(env["FEATURESTORE_OFFLINE_URI"]).materialized_windows(ACCOUNTS)
    assert {k: int(v) for k, v in rows.groupby("window_key").size().items()} == {
        k: logged[k]["rows"] for k in ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"]
    }


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
    # --force skips the source check, so the runs start and fail: the source table is absent.
    empty = tmp_path / "no_sources"
    empty.mkdir()
    env = dagster_env(replace(_daemon_settings(settings), source_root=str(empty)), tmp_path / "home")
    with running_daemon(env, tmp_path / "daemon.log"):
        result = featurestore(env, "backfill", "accounts", "--start", "2024-01-02", "--end", "2024-01-03", "--force",
                              "--wait", "--timeout", "420")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0/2 window(s) materialized, 2 failed" in result.stdout
    assert "ended COMPLETED_FAILED with 2 failed window(s)" in result.stderr
