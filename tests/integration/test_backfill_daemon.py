"""End to end: the project CLI submits real asset backfills that a running dagster-daemon executes."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterEventType, DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import RunsFilter
from deltalake import DeltaTable, write_deltalake

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.settings import Settings
from feature_pipelines.stores.online.local_redis import LocalRedisServer
from tests.helpers import BIN, PROJECT_DIR, dagster_env, offline_frame, running_daemon

pytestmark = pytest.mark.integration
ACCOUNTS = load_catalog(PROJECT_DIR / "feature_defs").get("accounts")


# Account rows that break the keys rule (the same account twice at one instant) on two days no
# other test here touches: their windows pass the pre-flight schema check, start, and fail inside.
BAD_DAYS = ("2024-01-20", "2024-01-21")


def _with_bad_days(sample_sources: str, root: Path) -> str:
    """A source root holding the sample's tables, with duplicate-key accounts rows on BAD_DAYS."""
    root.mkdir(parents=True)
    for table in Path(sample_sources).iterdir():
        if table.name == "accounts":
            shutil.copytree(table, root / table.name)
        else:
            (root / table.name).symlink_to(table, target_is_directory=True)
    rows = pa.table(DeltaTable(str(root / "accounts")).to_pyarrow_dataset().to_table())
    row = rows.slice(0, 1).to_pandas().assign(account_id="a_duplicated")
    times = pd.to_datetime([f"{day} 08:00" for day in BAD_DAYS for _ in range(2)], utc=True)
    bad = pd.concat([row.assign(updated_at=t) for t in times], ignore_index=True)
    write_deltalake(str(root / "accounts"), pa.Table.from_pandas(bad, schema=rows.schema, preserve_index=False),
                    mode="append")
    return str(root)


@pytest.fixture(scope="module")
def daemon_env(tmp_path_factory: pytest.TempPathFactory, sample_sources: str,
               redis_server: LocalRedisServer) -> Iterator[dict[str, str]]:
    """One dagster-daemon for this module's backfills, on a temporary instance of its own, its
    own offline store and Redis database 3 (other tests flush database 0); DAGSTER_HOME points
    at it in this process too while it runs (running_daemon sets and restores it)."""
    folder = tmp_path_factory.mktemp("daemon")
    settings = Settings(feature_defs_dir=PROJECT_DIR / "feature_defs", data_dir=folder / "data",
                        source_root=_with_bad_days(sample_sources, folder / "sources"),
                        offline_uri=str(folder / "offline"), redis_url=redis_server.url.rsplit("/", 1)[0] + "/3",
                        spark_master="local[2]")
    env = dagster_env(settings, folder / "home")
    with running_daemon(env, folder / "daemon.log"):
        yield env


@pytest.fixture(autouse=True)
def _instance_of_the_daemon(daemon_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests here read the daemon's instance (the conftest's autouse fixture restores DAGSTER_HOME
    after each test)."""
    monkeypatch.setenv("DAGSTER_HOME", daemon_env["DAGSTER_HOME"])


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
    days = ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"]
    rows = offline_frame(DeltaOfflineStore(env["FEATURESTORE_OFFLINE_URI"]), ACCOUNTS, days)
    source = DeltaTable(f"{env['FEATURESTORE_SOURCE_ROOT']}/accounts").to_pandas()
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


def test_backfill_of_windows_without_source_data_is_refused(daemon_env: dict[str, str]) -> None:
    env = daemon_env
    late = featurestore(env, "backfill", "accounts", "--start", "2030-01-01", "--end", "2030-01-02")
    assert late.returncode == 1
    assert "have not closed yet" in late.stderr or "no source data yet" in late.stderr
    ahead = featurestore(env, "backfill", "accounts", "--start", "2024-05-01", "--end", "2024-05-02")
    assert ahead.returncode == 1 and "accounts_v1 have no source data yet" in ahead.stderr, ahead.stderr
    bad = featurestore(env, "backfill", "accounts", "--start", "2024-05-02", "--end", "2024-05-01")
    assert bad.returncode == 1 and "before its start" in bad.stderr


def test_waiting_backfill_exits_non_zero_when_a_window_fails(daemon_env: dict[str, str]) -> None:
    # The runs start and fail inside (the keys rule), which is what --wait must report.
    result = featurestore(daemon_env, "backfill", "accounts", "--start", BAD_DAYS[0], "--end", BAD_DAYS[1],
                          "--wait", "--timeout", "420")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0/2 window(s) materialized, 2 failed" in result.stdout
    assert "ended COMPLETED_FAILED with 2 failed window(s)" in result.stderr
