"""Dagster wiring with a real instance: partitioned assets, single-run ranges, metadata, CLIs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetKey, BackfillPolicy, DagsterEventType, DagsterInstance, instance_for_test
from dagster._core.execution.api import create_execution_plan
from deltalake import DeltaTable

from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.errors import RetrievalError
from feature_pipelines.orchestration.assets import pool_name
from feature_pipelines.orchestration.code_location import build_definitions, materialize_job_name
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.settings import Settings
from tests.helpers import PROJECT_DIR, dagster_env

pytestmark = pytest.mark.integration


def test_every_feature_set_is_a_partitioned_asset_with_spec_attributes(settings: Settings) -> None:
    defs = build_definitions(settings)
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    for name in ("transactions_v1", "accounts_v1", "merchants_v1"):
        spec = specs[AssetKey([name])]
        assert spec.partitions_def is not None and spec.partitions_def.get_partition_keys()[0] == "2024-01-01"
        assert spec.owners and spec.group_name == "feature_sets" and {"spark", "delta"} <= spec.kinds
        assert spec.description and spec.tags["feature_set"] == name.rsplit("_v", 1)[0]
        assert spec.metadata["dagster/column_schema"].columns
    transactions = defs.resolve_assets_def("transactions_v1")
    assert transactions.backfill_policy == BackfillPolicy.single_run()
    # Writers of a feature set are serialized by its pool: every step of its job that writes a
    # store (the offline asset, the online publish) claims it; the checks and nothing else do.
    catalog = load_catalog(settings.feature_defs_dir)
    for name in ("transactions", "accounts", "merchants"):
        feature_set = catalog.get(name)
        plan = create_execution_plan(defs.resolve_job_def(materialize_job_name(feature_set)))
        pooled = {step.key: step.pool for step in plan.get_steps_to_execute_in_topo_order() if step.pool}
        assert pooled == {f"{name}_v1": f"feature_set_{name}", f"{name}_v1_online": f"feature_set_{name}"}
        assert pool_name(feature_set) == f"feature_set_{name}"
    assert specs[AssetKey(["transactions_v1"])].deps[0].asset_key == AssetKey(["sources", "transactions"])
    assert defs.resolve_job_def("materialize_transactions_v1") is not None
    # Column lineage: known for aggregates, declared in the merchants file for its transform.
    lineage = specs[AssetKey(["merchants_v1"])].metadata["dagster/column_lineage"].deps_by_column
    source = AssetKey(["sources", "transactions"])
    assert [(d.asset_key, d.column_name) for d in lineage["distinct_accounts_1d"]] == [(source, "account_id")]
    lineage = specs[AssetKey(["transactions_v1"])].metadata["dagster/column_lineage"].deps_by_column
    assert [d.column_name for d in lineage["amount_sum_7d"]] == ["amount"]
    assert [d.column_name for d in lineage["txn_count_7d"]] == ["event_time"]


def test_range_materializes_in_one_run_with_metadata(spark, settings: Settings) -> None:
    catalog = load_catalog(settings.feature_defs_dir)
    defs = build_definitions(settings, catalog)
    spec = catalog.get("transactions")
    with instance_for_test() as instance:
        outcome = materialize_range(defs, instance, spec, "2024-01-03", "2024-01-09")
        assert len(instance.get_runs()) == 1
        assert instance.get_materialized_partitions(AssetKey(["transactions_v1"])) == {
            f"2024-01-0{d}" for d in range(3, 10)
        }
    meta = outcome.metadata
    assert meta["windows"] == "2024-01-03 .. 2024-01-09 (7 windows)"
    # The counts reported against the rows stored, counted from the Delta table itself.
    stored = DeltaTable(f"{settings.offline_uri}/transactions/v1").to_pandas(columns=["window_key"]).window_key
    assert meta["rows_per_window"] == {key: int(n) for key, n in stored.value_counts().sort_index().items()}
    assert meta["dagster/row_count"] == len(stored) > 0
    assert meta["delta_version"] == 2 and outcome.online["online_keys_written"] > 0
    assert "| all | amount_sum_7d |" in meta["feature_stats"] and "| 2024-01-09 | amount_sum_7d |" in meta["feature_stats"]
    assert "account_id" in meta["preview"]
    # The asset-level window status: this run's 7 windows, the rest of the complete ones missing.
    assert "| materialized | 7 |" in meta["window_status"] and "| missing |" in meta["window_status"]
    assert "2024-01-01..2024-01-02" in meta["window_status"]
    table = DeltaTable(f"{settings.offline_uri}/transactions/v1")
    assert sorted({p["window_key"] for p in table.partitions()}) == [f"2024-01-0{d}" for d in range(3, 10)]


def test_dagster_cli_validates_and_materializes_a_partition_range(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dagster_env(settings, tmp_path / "dagster_home")
    dagster = str(Path(sys.executable).parent / "dagster")
    validate = subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"],
                              cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stderr[-3000:]

    # As the README writes it: the offline asset and its online publish, one run for the range.
    run = subprocess.run(
        [dagster, "asset", "materialize", "-m", "feature_pipelines.definitions",
         "--select", "merchants_v1,merchants_v1_online", "--partition-range", "2024-01-05...2024-01-07"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "merchants_v1_online" in run.stderr and "entities written to Redis" in run.stderr
    table = DeltaTable(f"{settings.offline_uri}/merchants/v1")
    assert table.version() == 2  # create + pin the definition, then one commit for the whole run
    assert sorted({p["window_key"] for p in table.partitions()}) == ["2024-01-05", "2024-01-06", "2024-01-07"]
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 1


def test_featurestore_cli_materializes_and_reports_errors_cleanly(spark, settings: Settings, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    env = dagster_env(settings, tmp_path / "home")
    runner = CliRunner()
    ok = runner.invoke(featurestore, ["materialize", "accounts", "--start", "2024-01-01", "--end", "2024-01-03"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "accounts_v1: 3 window(s)" in ok.output and "Delta version 2" in ok.output
    # A progress line and the result, nothing else: Dagster's log lines of the run stay in the instance.
    started, progress, result = ok.output.splitlines()
    assert started == "materializing accounts_v1: 2024-01-01 .. 2024-01-03 in one run ..."
    # The windows are from 2024, so the set is not fresh today: its non-blocking freshness check fails.
    assert re.fullmatch(r"accounts_v1: 3/3 windows, [1-9]\d* rows, \d+\.\d s; failed check\(s\): freshness_check "
                        r"\(see the asset's Checks tab\)", progress), progress
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        logged = instance.all_logs(result.rsplit(" ", 1)[1])
    assert {DagsterEventType.STEP_START, DagsterEventType.RUN_SUCCESS} <= {r.dagster_event_type for r in logged}
    assert any(r.user_message.startswith("materializing accounts_v1: 3 window(s)") for r in logged)
    # --verbose prints them too.
    verbose = runner.invoke(featurestore, ["materialize", "accounts", "--start", "2024-01-04", "--end", "2024-01-04",
                                           "--verbose"], env=env)
    assert verbose.exit_code == 0, verbose.output
    assert " - DEBUG - materialize_accounts_v1 - " in verbose.output and " - STEP_START - " in verbose.output

    cases = [
        (["materialize", "nosuch", "--start", "2024-01-01", "--end", "2024-01-02"], "unknown feature set 'nosuch'"),
        (["materialize", "accounts", "--start", "2024-13-01", "--end", "2024-01-02"], "window key '2024-13-01' is not a daily key"),
        (["materialize", "accounts", "--start", "2024-01-05", "--end", "2024-01-02"], "range end '2024-01-02' is before its start"),
        (["materialize", "accounts", "--version", "7", "--start", "2024-01-01", "--end", "2024-01-02"], "has no version 7"),
    ]
    for args, message in cases:
        result = runner.invoke(featurestore, args, env=env)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output


def test_a_retrieval_spec_naming_an_undeclared_feature_set_says_which_file_to_edit(settings: Settings,
                                                                                   tmp_path: Path) -> None:
    """The example retrieval spec once the example feature sets are deleted: the code location
    cannot load (the spec is part of it), and the error names the spec file to edit."""
    defs_dir = tmp_path / "feature_defs"
    (defs_dir / "retrieval_specs").mkdir(parents=True)
    spec = defs_dir / "retrieval_specs" / "fraud_model.yaml"
    shutil.copy(PROJECT_DIR / "feature_defs" / "retrieval_specs" / "fraud_model.yaml", spec)
    with pytest.raises(RetrievalError) as raised:
        build_definitions(replace(settings, feature_defs_dir=defs_dir))
    assert str(raised.value) == (
        f"retrieval spec {spec}, entry transactions:1:amount_sum_1d: unknown feature set 'transactions'; known "
        "feature sets: none; edit or remove that entry, or delete the file if no model uses it (retrieval specs "
        "load with the feature sets).")

