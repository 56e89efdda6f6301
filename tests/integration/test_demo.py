"""`featurestore demo` at an injected now: the sample ends yesterday, every window it has data for
is materialized, the freshness checks pass, and status shows no window behind."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.test_utils import freeze_time  # Dagster's clock (freshness); Spark and Delta keep real time

from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.settings import Settings
from tests.helpers import PROJECT_DIR, dagster_env

NOW = datetime(2024, 3, 1, 9, 30, tzinfo=timezone.utc)  # complete windows: 2024-01-01..2024-02-29
SETS = ["accounts_v1", "merchants_v1", "transactions_v1"]


def test_demo_ends_yesterday_and_leaves_nothing_behind(spark, settings: Settings, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    settings = replace(settings, source_root=str(tmp_path / "sources"), data_dir=tmp_path / "data")
    env = dagster_env(settings, tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setattr("feature_pipelines.clock.utc_now", lambda: NOW)
    with freeze_time(NOW):
        demo = CliRunner().invoke(featurestore, ["demo", "--scale", "2000", "--days", "30"], env=env)
    assert demo.exit_code == 0, demo.output
    # Short: a progress line per feature set and the summary; Dagster's run logs stay in the instance.
    lines = demo.output.splitlines()
    assert len(lines) < 30 and not [line for line in lines if " - DEBUG - " in line], demo.output
    for name in SETS:
        assert f"backfilling {name}: 2024-01-31 .. 2024-02-29 in one run ..." in lines
        assert [line for line in lines if re.fullmatch(rf"{name}: 30/30 windows, [1-9]\d* rows, \d+\.\d s", line)]
    assert "--at 2024-03-01T00:00:00+00:00" in demo.output
    # It says how to use the README's commands in this shell.
    assert f"  export DAGSTER_HOME={env['DAGSTER_HOME']}" in lines and "/bin/activate" in demo.output

    # The README's batch-inference command runs as written on the entities file the demo wrote.
    entities = settings.data_dir / "observations" / "entities.parquet"
    [command] = [line.strip() for line in (PROJECT_DIR / "README.md").read_text().splitlines()
                 if line.startswith("featurestore inference-set ")]
    args = [arg.replace("data/", f"{settings.data_dir}/", 1) for arg in shlex.split(command)[1:]]
    assert str(entities) in args
    inference = CliRunner().invoke(featurestore, args, env=env)
    assert inference.exit_code == 0, inference.output
    assert f"{pq.read_metadata(entities).num_rows} rows -> " in inference.output and " - DEBUG - " not in inference.output

    status = CliRunner().invoke(featurestore, ["status"], env=env)
    assert status.exit_code == 0, status.output
    assert status.output.splitlines() == [
        line for name in SETS for line in (f"{name}: 60 window(s): 30 materialized, 30 no source data",
                                           "  no source data: 2024-01-01..2024-01-30")
    ]
    described = CliRunner().invoke(featurestore, ["describe", "transactions"], env=env)
    assert "freshness:       up to date (last complete window 2024-02-29 is materialized)" in described.output
    with DagsterInstance.get() as instance:
        for name in SETS:
            [record] = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(AssetKey([name]), "freshness_check"), limit=1)
            evaluation = record.event.dagster_event.event_specific_data
            assert evaluation.passed, (name, evaluation.description)
