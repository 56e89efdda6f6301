"""Window status: materialized, missing, failed and stale windows, from a real instance and stores."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, instance_for_test
from deltalake import DeltaTable, write_deltalake

from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.orchestration.code_location import build_definitions
from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.settings import Settings
from feature_pipelines.orchestration.window_states import window_run_states
from feature_pipelines.planning.window_status import staleness_files, status_windows, window_statuses
from tests.helpers import PROJECT_DIR, dagster_env

pytestmark = pytest.mark.integration
CATALOG = load_catalog(PROJECT_DIR / "feature_defs")
ACCOUNTS = CATALOG.get("accounts")
NOW = datetime(2024, 3, 1, tzinfo=timezone.utc)


def stored_rows(offline_uri: str) -> dict[str, int]:
    """Rows per window of the accounts table, counted from its Delta files."""
    keys = DeltaTable(f"{offline_uri}/accounts/v1").to_pandas(columns=["window_key"]).window_key
    return {key: int(n) for key, n in keys.value_counts().items()}


def test_status_shows_materialized_missing_failed_and_stale_windows(spark, settings: Settings, sample_sources: str,
                                                                    tmp_path: Path) -> None:
    root = tmp_path / "sources"
    shutil.copytree(sample_sources, root)
    settings = replace(settings, source_root=str(root))
    offline = DeltaOfflineStore(settings.offline_uri)
    with instance_for_test() as instance:
        defs = build_definitions(settings, CATALOG)
        materialize_range(defs, instance, ACCOUNTS, "2024-01-02", "2024-01-04")
        # A run that fails on window 2024-01-06: its source is gone for the moment.
        shutil.move(root / "accounts", tmp_path / "accounts_away")
        with pytest.raises(Exception, match="no Delta table"):
            materialize_range(defs, instance, ACCOUNTS, "2024-01-06", "2024-01-06")
        shutil.move(tmp_path / "accounts_away", root / "accounts")
        # A late profile change for 2024-01-03 lands in the source after the windows were written.
        path = str(root / "accounts")
        existing = read_delta(DeltaTable(path))
        late = existing.slice(0, 1).to_pandas()
        late["updated_at"] = pd.to_datetime(["2024-01-03 12:00:00"], utc=True)
        write_deltalake(path, pa.Table.from_pandas(late, schema=existing.schema, preserve_index=False), mode="append")

        windows = status_windows(ACCOUNTS, NOW, "2024-01-01", "2024-01-06")
        statuses = window_statuses(ACCOUNTS, windows, offline.materialized_windows(ACCOUNTS),
                                   staleness_files(ACCOUNTS, settings.source_root, None),
                                   window_run_states(instance, ACCOUNTS, windows))
    by_key = {s.key: s for s in statuses}
    assert {k: s.status for k, s in by_key.items()} == {
        "2024-01-01": "missing", "2024-01-02": "materialized", "2024-01-03": "stale",
        "2024-01-04": "materialized", "2024-01-05": "missing", "2024-01-06": "failed",
    }
    # Row counts as stored: counted from the Delta table, not from the window log status reads.
    stored = stored_rows(settings.offline_uri)
    assert {k: s.rows for k, s in by_key.items() if s.status in ("materialized", "stale")} == {
        k: stored[k] for k in ("2024-01-02", "2024-01-03", "2024-01-04")}
    assert by_key["2024-01-02"].materialized_at is not None
    assert by_key["2024-01-01"].rows is None


def test_status_cli_separates_missing_windows_from_windows_without_source_data(
        spark, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = dagster_env(settings, tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    # Complete windows 2024-01-01..2024-02-19; the accounts source's events end on 2024-02-09.
    monkeypatch.setattr("feature_pipelines.clock.utc_now", lambda: datetime(2024, 2, 20, 9, tzinfo=timezone.utc))
    with DagsterInstance.get() as instance:
        materialize_range(build_definitions(settings, CATALOG), instance, ACCOUNTS, "2024-01-02", "2024-01-04")
    rows = stored_rows(settings.offline_uri)["2024-01-04"]

    compact = CliRunner().invoke(featurestore, ["status", "accounts"], env=env)
    assert compact.exit_code == 0, compact.output
    assert compact.output.splitlines() == [
        "accounts_v1: 50 window(s): 3 materialized, 37 missing, 10 no source data",
        "  missing: 2024-01-01, 2024-01-05..2024-02-09",
        "  no source data: 2024-02-10..2024-02-19",
    ]
    every = CliRunner().invoke(featurestore, ["status", "accounts", "--all"], env=env)
    assert every.exit_code == 0, every.output
    lines = every.output.splitlines()
    assert lines[:2] == ["accounts_v1: 50 window(s): 3 materialized, 37 missing, 10 no source data",
                         "  window           status               rows  materialized at (UTC)"]
    assert len(lines) == 2 + 50
    by_key = {line.split()[0]: line for line in lines[2:]}
    assert by_key["2024-01-04"].startswith(f"  2024-01-04       materialized    {rows:>9}  20")
    assert by_key["2024-02-09"] == "  2024-02-09       missing                 -  -"
    assert by_key["2024-02-10"] == "  2024-02-10       no source data          -  -"
