"""Scale-out by configuration only: the same feature sets on a real Spark standalone cluster with
Dagster's storage in a real PostgreSQL (deploy/dagster.postgres.yaml), and through a Spark
Connect server; each result must equal the local[2] result row for row."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance.ref import InstanceRef

from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.settings import Settings
from feature_pipelines.planning.windows import windows_between
from tests.cluster_services import PostgresServer, postgres_server, spark_connect_server, spark_standalone
from tests.helpers import BIN, PROJECT_DIR, dagster_env, offline_frame, running_daemon

pytestmark = [pytest.mark.integration, pytest.mark.scale_out]
TRANSACTIONS = load_catalog(PROJECT_DIR / "feature_defs").get("transactions")
FIRST, LAST = "2024-01-01", "2024-01-06"
# The run's driver joins the cluster from loopback; executors get 1 GiB each.
CLUSTER_SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                      "spark.executor.memory": "1g", "spark.cores.max": "2"}


@pytest.fixture(scope="module")
def local_reference(spark, sample_sources: str, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The windows FIRST..LAST computed on the tests' local[2] session."""
    store = DeltaOfflineStore(str(tmp_path_factory.mktemp("local-reference") / "offline"))
    keys = [w.key for w in windows_between(TRANSACTIONS, FIRST, LAST)]
    materialize_windows(spark, TRANSACTIONS, keys, Stores(sample_sources, store, None))
    return offline_frame(store, TRANSACTIONS)


def _postgres_env(pg: PostgresServer) -> dict[str, str]:
    """What deploy/dagster.postgres.yaml reads."""
    return {"DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_USER": pg.user,
            "DAGSTER_PG_PASSWORD": pg.password, "DAGSTER_PG_DB": pg.database}


def _featurestore(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "featurestore"), *args], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _completed_apps(web_ui_url: str) -> list[dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{web_ui_url}/json/", timeout=5) as response:
        return json.load(response).get("completedapps", [])


@pytest.fixture()
def postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    with postgres_server(tmp_path / "pg") as pg:
        for key, value in _postgres_env(pg).items():
            monkeypatch.setenv(key, value)  # this process opens the same instance
        yield pg


def test_backfill_on_a_spark_standalone_cluster_with_postgres_storage_equals_local(
        settings: Settings, tmp_path: Path, postgres: PostgresServer, local_reference: pd.DataFrame) -> None:
    with spark_standalone(tmp_path / "spark", cores=2, memory="2g") as cluster:
        home = tmp_path / "home"
        env = dagster_env(settings, home)
        (home / "dagster.yaml").write_text((PROJECT_DIR / "deploy" / "dagster.postgres.yaml").read_text())
        env.update(_postgres_env(postgres), SPARK_MASTER=cluster.master_url, PYSPARK_PYTHON=sys.executable,
                   FEATURESTORE_SPARK_CONF=json.dumps(CLUSTER_SPARK_CONF),
                   REDIS_URL=settings.redis_url.rsplit("/", 1)[0] + "/4")  # other tests flush database 0
        with running_daemon(env, tmp_path / "daemon.log"):
            result = _featurestore(env, "backfill", "transactions", "--start", FIRST, "--end", LAST,
                                   "--wait", "--timeout", "600")
        assert result.returncode == 0, result.stdout + result.stderr
        apps = _completed_apps(cluster.web_ui_url)

    # The run's Spark application ran on the cluster, not in a local master.
    assert [app["name"] for app in apps] == ["feature-store"], apps
    # Dagster kept the backfill and its one run (the range as one Spark job) in PostgreSQL.
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        (backfill,) = instance.get_backfills()
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs()
        assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS]
        assert runs[0].tags["dagster/backfill"] == backfill.backfill_id
    offline = DeltaOfflineStore(settings.offline_uri)
    pd.testing.assert_frame_equal(offline_frame(offline, TRANSACTIONS), local_reference)
    assert sorted(offline.materialized_windows(TRANSACTIONS)) == [w.key for w in windows_between(TRANSACTIONS, FIRST, LAST)]


def test_spark_connect_materializes_like_local(
        settings: Settings, tmp_path: Path, local_reference: pd.DataFrame) -> None:
    with spark_connect_server(tmp_path / "connect", master="local[2]", python=sys.executable) as server:
        env = dagster_env(settings, tmp_path / "home")
        env.update(SPARK_MASTER=server.url)
        result = _featurestore(env, "materialize", "transactions", "--start", FIRST, "--end", LAST)
        assert result.returncode == 0, result.stdout + result.stderr
        # The Spark jobs ran in the server's driver, not in a session of the run's own.
        assert re.search(r"DAGScheduler: Job \d+ finished", server.log.read_text()), server.log
    offline = DeltaOfflineStore(settings.offline_uri)
    pd.testing.assert_frame_equal(offline_frame(offline, TRANSACTIONS), local_reference)
