"""Bad input, one table per kind: each case asserts the exact error class and a message naming
the offending item, and that nothing was written. (Retrieval input has its own table in
test_retrieval.py: naive timestamps, missing key columns, unknown features and versions,
windows not materialized.)"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from feature_pipelines import Feature
from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.errors import (
    SourceError,
    TransformOutputError,
    VersionConflictError,
)
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.settings import Settings
from tests.factories import feature_set
from tests.helpers import dagster_env, write_source

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
    if source is not None:
        schema = None
        if source.empty:
            schema = pa.schema([("user_id", pa.string()), ("score", pa.float64()), ("event_time", pa.timestamp("us", "UTC"))])
        write_source(stores.source_root, "events", source, schema=schema)
    with pytest.raises(error, match=re.escape(message)):
        materialize_windows(spark, feature_set, DAY, stores)
    assert not stores.offline.exists(feature_set) and stores.offline.materialized_windows(feature_set) == {}


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


@pytest.mark.integration
@pytest.mark.parametrize(("args", "message"), [
    (["materialize", "transactions", "--start", "2024-13-01", "--end", "2024-01-02"],
     "feature set transactions_v1: window key '2024-13-01' is not a daily key; write it like '2024-01-01'"),
    (["materialize", "transactions", "--start", "2024-01-05", "--end", "2024-01-02"],
     "feature set transactions_v1: range end '2024-01-02' is before its start '2024-01-05'; swap them"),
    (["materialize", "nosuch", "--start", "2024-01-01", "--end", "2024-01-02"], "unknown feature set 'nosuch'"),
    (["backfill", "transactions", "--start", "2024-01-05", "--end", "2024-01-02"],
     "range end '2024-01-02' is before its start '2024-01-05'; swap them"),
    (["status", "transactions", "--start", "yesterday"], "window key 'yesterday' is not a daily key"),
    (["describe", "transactions", "--version", "7"], "feature set 'transactions' has no version 7"),
], ids=["bad date", "end before start", "unknown set", "backfill end before start", "status bad date",
        "unknown version"])
def test_bad_cli_input(settings: Settings, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(featurestore, args, env=dagster_env(settings, tmp_path / "home"))
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not Path(settings.offline_uri).exists()
