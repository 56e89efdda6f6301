"""The catalog commands: list, search and describe, on the example feature sets."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance

from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.orchestration.code_location import build_definitions
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.settings import Settings
from tests.helpers import dagster_env

NOW = datetime(2024, 2, 20, 9, tzinfo=timezone.utc)


def test_list_shows_every_feature_set(settings: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(featurestore, ["list"], env=dagster_env(settings, tmp_path / "home"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["feature", "set", "entities"]
    assert [line.split()[0] for line in lines[1:]] == ["accounts_v1", "merchants_v1", "transactions_v1"]
    assert "team:merchant-risk" in lines[2] and "merchant_id" in lines[2]


@pytest.mark.parametrize(
    ("query", "expected", "field"),
    [
        ("team:crm", ["accounts_v1"], "owner"),
        ("domain=customers", ["accounts_v1"], "tag"),
        ("MERCHANT_ID", ["merchants_v1"], "entity"),
        ("amount_sum_7d", ["transactions_v1"], "feature"),
        ("trailing", ["transactions_v1"], "description"),
    ],
)
def test_search_matches_names_tags_owners_entities_and_descriptions(settings: Settings, tmp_path: Path, query: str,
                                                                   expected: list[str], field: str) -> None:
    result = CliRunner().invoke(featurestore, ["search", query], env=dagster_env(settings, tmp_path / "home"))
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[1:]
    assert [row.split()[0] for row in rows] == expected
    assert all(field in row for row in rows)


def test_search_without_match_says_so(settings: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(featurestore, ["search", "no-such-thing"], env=dagster_env(settings, tmp_path / "home"))
    assert result.exit_code == 0 and "no feature set matches 'no-such-thing'" in result.output


@pytest.mark.integration
def test_describe_shows_spec_windows_freshness_runs_and_users(spark, settings: Settings, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    env = dagster_env(settings, tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    # Complete windows 2024-01-01..2024-02-19; the accounts source's events end on 2024-02-09.
    monkeypatch.setattr("feature_pipelines.clock.utc_now", lambda: NOW)
    catalog = load_catalog(settings.feature_defs_dir)
    with DagsterInstance.get() as instance:
        outcome = materialize_range(build_definitions(settings, catalog), instance, catalog.get("accounts"),
                                    "2024-01-02", "2024-01-04")
    result = CliRunner().invoke(featurestore, ["describe", "accounts"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("accounts_v1  (Latest known profile of each account.)")
    for expected in [
        "versions:        v1", "owners:          team:crm", "entities:        account_id (string)",
        "source:          accounts (delta, path accounts, event time updated_at)", "compute:         passthrough",
        "credit_limit  float64   Credit limit in EUR", "materialized:    3 window(s): 2024-01-02..2024-01-04",
        "missing:         37 window(s): 2024-01-01, 2024-01-05..2024-02-09\n",
        "no source data:  10 window(s): 2024-02-10..2024-02-19\n",
        "freshness:       36 window(s) behind: newest materialized 2024-01-04, the source has data up to 2024-02-09; "
        "each window is due 7h after it closes",
        f"{outcome.run_id[:8]}  2024-01-02 .. 2024-01-04 (3 windows)", "used by:         fraud_model",
    ]:
        assert expected in out, f"{expected!r} not in:\n{out}"
    unknown = CliRunner().invoke(featurestore, ["describe", "nosuch"], env=env)
    assert unknown.exit_code == 1 and "unknown feature set 'nosuch'" in unknown.output
    assert os.environ["DAGSTER_HOME"] == env["DAGSTER_HOME"]
