"""Bad input, one table per kind: each case asserts the exact error class and a message naming
the offending item, and that nothing was written. The CLI's table runs the real console script
(click's in-process runner would swallow a traceback) and also asserts one line, exit 1, no
traceback and no run or backfill recorded. (Retrieval input has its own table in
test_retrieval.py: naive timestamps, missing key columns, unknown features and versions,
windows not materialized; how the CLI words unexpected errors is in unit/cli/test_friendly.py.)"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterInstance

from feature_pipelines import Feature
from feature_pipelines.errors import (
    SourceError,
    TransformOutputError,
    VersionConflictError,
)
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.settings import Settings
from feature_pipelines.stores.offline.delta_store import offline_schema
from tests.factories import feature_set
from tests.helpers import BIN, PROJECT_DIR, dagster_env, files_digest, write_source

SCORES = feature_set(features={"score": "float64"}, start="2024-03-01")
DAY = ["2024-03-02"]


def _frame(users: list, scores: list, times: list) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "score": scores, "event_time": pd.to_datetime(times, utc=True)})


GOOD = _frame(["u1", "u2"], [0.1, 0.2], ["2024-03-02 01:00", "2024-03-02 02:00"])


@pytest.mark.integration
@pytest.mark.parametrize(("source", "spec", "error", "message"), [
    (None, {}, SourceError, "source 'events': no Delta table at"),
    (GOOD.iloc[:0], {}, SourceError, "is empty: it holds no rows at all"),
    (GOOD.assign(score=["x", "y"]), {}, SourceError, "column 'score' has type 'string' but is declared 'float64'"),
    (GOOD.assign(event_time=GOOD["event_time"].dt.tz_localize(None)), {}, SourceError,
     "column 'event_time' holds naive timestamps"),
    (_frame([None, "u2"], [0.1, 0.2], ["2024-03-02 01:00", "2024-03-02 02:00"]), {}, TransformOutputError,
     "output rows have a null key or timestamp"),
    (_frame(["u1", "u1"], [0.1, 0.2], ["2024-03-02 01:00", "2024-03-02 01:00"]), {}, TransformOutputError,
     "output rows are not unique on (user_id, ts)"),
    (GOOD, {"transform": lambda events, window: events.selectExpr("user_id", "score",
                                                                   "event_time + interval 3 days as ts")},
     TransformOutputError, "output rows have ts outside the windows being materialized"),
], ids=["missing", "empty", "wrong type", "naive timestamps", "null keys", "duplicate keys", "rows outside window"])
def test_bad_sources_write_nothing(spark, stores: Stores, source, spec: dict, error: type, message: str) -> None:
    feature_set = replace(SCORES, **spec)
    # The store already holds the window the bad run would replace, and the one before it.
    held = ["2024-03-01", *DAY]
    rows = pa.Table.from_pylist([
        {"user_id": user, "ts": datetime.fromisoformat(f"{key}T05:00:00+00:00"), "score": float(i),
         "window_key": key, "created": datetime(2024, 3, 3, tzinfo=timezone.utc)}
        for i, (key, user) in enumerate((k, u) for k in held for u in ("u1", "u9"))
    ], schema=offline_schema(feature_set))
    stores.offline.open(feature_set).replace_windows(rows.to_batches(), held)
    before = files_digest(stores.offline.root)
    assert sorted(stores.offline.materialized_windows(feature_set)) == held
    if source is not None:
        schema = None
        if source.empty:
            schema = pa.schema([("user_id", pa.string()), ("score", pa.float64()), ("event_time", pa.timestamp("us", "UTC"))])
        write_source(stores.source_root, "events", source, schema=schema)
    with pytest.raises(error, match=re.escape(message)):
        materialize_windows(spark, feature_set, DAY, stores)
    # Every file of the offline root (tables, Delta logs, window logs) as it was, byte for byte.
    assert files_digest(stores.offline.root) == before
    assert stores.offline.open(feature_set).read().sort_by("score").equals(rows)


@pytest.mark.integration
def test_version_reused_with_another_definition(spark, stores: Stores) -> None:
    write_source(stores.source_root, "events", GOOD)
    materialize_windows(spark, SCORES, DAY, stores)
    version = stores.offline.open(SCORES).delta.version()
    changed = replace(SCORES, features=[Feature("score", "float32")])
    with pytest.raises(VersionConflictError, match=re.escape("feature set scores_v1 was materialized with another "
                                                             "definition (changed: features;")):
        materialize_windows(spark, changed, DAY, stores)
    assert stores.offline.open(SCORES).delta.version() == version


@dataclass(frozen=True)
class BadCli:
    """What the bad-input CLI cases share: an environment on the sample sources with its own
    DAGSTER_HOME and offline store, and the bad inputs under `root`."""

    root: Path
    env: dict[str, str]

    @contextmanager
    def instance(self) -> Iterator[DagsterInstance]:
        # dagster.yaml reads DAGSTER_HOME for its storage folder.
        previous = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = self.env["DAGSTER_HOME"]
        try:
            with DagsterInstance.get() as instance:
                yield instance
        finally:
            if previous is None:
                del os.environ["DAGSTER_HOME"]
            else:
                os.environ["DAGSTER_HOME"] = previous

    def recorded(self) -> tuple[int, int]:
        """Runs and backfills in the instance."""
        with self.instance() as instance:
            return instance.get_runs_count(), len(instance.get_backfills())


LATE_DEFS = """
from feature_pipelines import Entity, Feature, FeatureSet, Partitions, Source

late = FeatureSet(
    name="late", version=1, entities=[Entity("account_id")], features=[Feature("credit_limit", "float64")],
    source=Source(name="accounts", path="accounts", timestamp="updated_at",
                  columns={"account_id": "string", "credit_limit": "float64"}),
    partitions=Partitions("daily", start="2024-01-01"), temporal_join_lookback="1d", source_delay="2d",
)
"""


@pytest.fixture(scope="module")
def bad_cli(tmp_path_factory: pytest.TempPathFactory, sample_sources: str, redis_server) -> BadCli:
    root = tmp_path_factory.mktemp("bad_cli")
    settings = Settings(feature_defs_dir=PROJECT_DIR / "feature_defs", data_dir=root / "data", source_root=sample_sources,
                        offline_uri=str(root / "offline"), redis_url=redis_server.url, spark_master="local[2]")
    cli = BadCli(root, dagster_env(settings, root / "home"))
    with cli.instance() as instance:  # create the storage before any command does
        instance.get_runs_count()
        instance.get_backfills()
    # A transactions source without its declared column `amount`.
    write_source(root / "lacking", "transactions", pd.DataFrame({
        "transaction_id": ["t1"], "account_id": ["a000001"], "merchant_id": ["m00001"], "channel": ["web"],
        "event_time": pd.to_datetime(["2024-01-02 01:00"], utc=True)}))
    # Observations and entities for fraud_model (keys account_id, merchant_id) without merchant_id.
    pd.DataFrame({"account_id": ["a000001"], "event_timestamp": pd.to_datetime(["2024-01-20"], utc=True),
                  "label": [1]}).to_parquet(root / "observations.parquet")
    pd.DataFrame({"account_id": ["a000001"]}).to_parquet(root / "entities.parquet")
    # ... and with both keys, but without the amount its request feature reads.
    pd.DataFrame({"account_id": ["a000001"], "merchant_id": ["m00001"], "event_timestamp": pd.to_datetime(
        ["2024-01-20"], utc=True)}).to_parquet(root / "no_amount.parquet")
    (root / "late_defs").mkdir()
    (root / "late_defs" / "late.py").write_text(LATE_DEFS)
    return cli


def _run_cli(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess:
    """The real console script, as a user runs it: what it prints and how it exits."""
    return subprocess.run([str(BIN / "featurestore"), *args], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=300)


MATERIALIZE_DAY = ["--start", "2024-01-02", "--end", "2024-01-02"]
LACKING = {"FEATURESTORE_SOURCE_ROOT": "{root}/lacking"}
MISSING_AMOUNT = "source 'transactions' ({root}/lacking/transactions): column 'amount' is missing; the table has"
NO_MERCHANT = ("observations lack entity key column(s) ['merchant_id'] of feature set merchants_v1; "
               "observation columns are ['account_id'")
NO_AMOUNT = ("observations lack request field(s) ['amount'] that request feature(s) ['amount_to_mean_30d'] read; add "
             "them: amount (float64).")


@pytest.mark.integration
@pytest.mark.parametrize(("args", "env", "message"), [
    (["materialize", "transactions", "--start", "2024-13-01", "--end", "2024-01-02"], {},
     "feature set transactions_v1: window key '2024-13-01' is not a daily key; write it like '2024-01-01'"),
    (["materialize", "transactions", "--start", "2024-01-05", "--end", "2024-01-02"], {},
     "feature set transactions_v1: range end '2024-01-02' is before its start '2024-01-05'; swap them"),
    (["materialize", "nosuch", "--start", "2024-01-01", "--end", "2024-01-02"], {}, "unknown feature set 'nosuch'"),
    (["backfill", "transactions", "--start", "2024-01-05", "--end", "2024-01-02"], {},
     "range end '2024-01-02' is before its start '2024-01-05'; swap them"),
    (["status", "transactions", "--start", "yesterday"], {}, "window key 'yesterday' is not a daily key"),
    (["describe", "transactions", "--version", "7"], {}, "feature set 'transactions' has no version 7"),
    (["materialize", "transactions", *MATERIALIZE_DAY], LACKING, MISSING_AMOUNT),
    (["backfill", "transactions", *MATERIALIZE_DAY], LACKING, MISSING_AMOUNT),
    (["training-set", "fraud_model", "--observations", "{root}/observations.parquet"], {}, NO_MERCHANT),
    (["inference-set", "fraud_model", "--entities", "{root}/entities.parquet", "--as-of", "2024-01-20T00:00:00+00:00"],
     {}, NO_MERCHANT),
    (["training-set", "fraud_model", "--observations", "{root}/no_amount.parquet"], {}, NO_AMOUNT),
    (["inference-set", "fraud_model", "--entities", "{root}/entities.parquet", "--as-of", "2024-01-20T00:00:00"], {},
     "--as-of '2024-01-20T00:00:00' has no time zone; add one, e.g. 2024-02-01T00:00:00+00:00"),
    (["list"], {"FEATURE_DEFS_DIR": "{root}/late_defs"},
     "{root}/late_defs/late.py: feature set 'late': temporal_join_lookback 1d is shorter than source_delay 2d"),
    (["stream", "--allowed-lateness", "5x"], {}, "--allowed-lateness: cannot read duration '5x'; write a number and"),
    (["stream", "--source", "accounts"], {}, "source 'accounts' takes no pushed events: no feature set that reads it "
                                            "streams; set materialization=Materialization(stream=True) on one of"),
], ids=["bad date", "end before start", "unknown set", "backfill end before start", "status bad date",
        "unknown version", "source lacks a column", "backfill source lacks a column", "observations lack a key",
        "entities lack a key", "observations lack a request field", "naive as-of", "lookback shorter than delay",
        "stream bad lateness", "stream a source nothing streams"])
def test_bad_cli_input(bad_cli: BadCli, args: list[str], env: dict[str, str], message: str) -> None:
    """Every error a user causes: one line `error: ...` ending in one period, exit 1, no
    traceback, and nothing recorded: no run, no backfill (the checks come before the run)."""
    before = bad_cli.recorded()
    root = str(bad_cli.root)
    result = _run_cli({**bad_cli.env, **{k: v.format(root=root) for k, v in env.items()}},
                      [arg.format(root=root) for arg in args])
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message.format(root=root) in errors[0], result.stderr
    assert errors[0].endswith(".") and not errors[0].endswith(".."), errors[0]
    assert "Traceback" not in result.stderr + result.stdout and 'File "' not in result.stderr + result.stdout
    assert not Path(bad_cli.env["FEATURESTORE_OFFLINE_URI"]).exists()
    assert bad_cli.recorded() == before


@pytest.mark.integration
def test_debug_shows_the_traceback(bad_cli: BadCli) -> None:
    result = _run_cli(bad_cli.env, ["--debug", "materialize", "nosuch", "--start", "2024-01-01", "--end", "2024-01-02"])
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and 'File "' in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == (
        "error: unknown feature set 'nosuch'; known feature sets: accounts, merchants, transactions.")
