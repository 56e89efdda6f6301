"""Fixtures of the integration tests: one real Spark session (local[2]) per test session, one
real redis-server, temporary Delta stores, the sample sources and Settings pointing at them.
Every test under this folder is marked `integration`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from pyspark.sql import SparkSession

from feature_pipelines.cli.sample_data import generate_sample_data
from feature_pipelines.compute.materialize import Stores
from feature_pipelines.compute.spark_session import LOCAL_SPARK_NETWORK, SESSION_SETTINGS
from feature_pipelines.settings import Settings
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.local_redis import LocalRedisServer
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from tests.helpers import PROJECT_DIR, TEST_SAMPLE

if TYPE_CHECKING:
    from feature_pipelines.retrieval.feature_store import FeatureStore


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # stay on loopback
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv (pyarrow)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("feature-store-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        # The tests' tables have up to ~100 window files: list them on the driver instead of in
        # a Spark job per read (what Spark does past 32 paths, for object stores).
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000")
    )
    for key, value in {**SESSION_SETTINGS, **LOCAL_SPARK_NETWORK}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisServer]:
    with LocalRedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture()
def redis_url(redis_server: LocalRedisServer) -> str:
    """Database 0 of the session's redis-server, emptied for this test, so that nothing a test
    publishes shows in another. (Fixtures that keep data across tests use databases 1-3.)"""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture()
def online_store(redis_url: str) -> Iterator[RedisOnlineStore]:
    client = redis.Redis.from_url(redis_url)
    yield RedisOnlineStore(client, redis_url)
    client.close()


@pytest.fixture()
def stores(tmp_path: Path, online_store: RedisOnlineStore) -> Stores:
    return Stores(
        source_root=str(tmp_path / "sources"),
        offline=DeltaOfflineStore(str(tmp_path / "offline")),
        online=online_store,
    )


@pytest.fixture(scope="session")
def sample_sources(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example domain's source tables, generated once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("sample") / "sources"
    generate_sample_data(str(root), TEST_SAMPLE)
    return str(root)


@pytest.fixture()
def settings(tmp_path: Path, sample_sources: str, redis_url: str) -> Settings:
    return Settings(
        feature_defs_dir=PROJECT_DIR / "feature_defs",
        data_dir=tmp_path / "data",
        source_root=sample_sources,
        offline_uri=str(tmp_path / "offline"),
        redis_url=redis_url,
        spark_master="local[2]",
    )


@pytest.fixture(scope="session")
def materialized_store(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, sample_sources: str,
                       redis_server: LocalRedisServer) -> FeatureStore:
    """The example feature sets materialized offline and published online through MATERIALIZED_AT
    (the sample covers 2024-01-01 .. 2024-02-09), once per session; read-only for tests. The online
    values are in Redis database 1 (`materialized_store.online.url`; the per-test fixtures flush 0)."""
    from feature_pipelines.compute.materialize import materialize_windows
    from feature_pipelines.planning.windows import windows_between
    from feature_pipelines.retrieval.feature_store import FeatureStore
    from feature_pipelines.spec.catalog import load_catalog
    from feature_pipelines.stores.publish import publish_windows

    url = redis_server.url.rsplit("/", 1)[0] + "/1"
    client = redis.Redis.from_url(url)
    client.flushdb()
    catalog = load_catalog(PROJECT_DIR / "feature_defs")
    stores = Stores(sample_sources, DeltaOfflineStore(str(tmp_path_factory.mktemp("materialized") / "offline")),
                    RedisOnlineStore(client, url))
    for name, last in (("transactions", "2024-02-19"), ("accounts", "2024-02-19"),
                       ("merchants", "2024-02-18")):  # merchants: source_delay is 1 day
        feature_set = catalog.get(name)
        keys = [w.key for w in windows_between(feature_set, "2024-01-01", last)]
        materialize_windows(spark, feature_set, keys, stores)
        publish_windows(feature_set, keys, stores.offline, stores.online)
    return FeatureStore(catalog, stores.offline, stores.online, spark=spark)


def _restored(name: str) -> bool:
    return name in ("DAGSTER_HOME", "REDIS_URL") or name.startswith("FEATURESTORE_")


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Undo what a test, or the product code it runs (the CLI in process sets DAGSTER_HOME when
    unset), leaves in this process's DAGSTER_HOME, REDIS_URL and FEATURESTORE_* variables."""
    saved = {name: value for name, value in os.environ.items() if _restored(name)}
    yield
    for name in [name for name in os.environ if _restored(name) and name not in saved]:
        del os.environ[name]
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _forget_dagster_state_storage() -> Iterator[None]:
    """Entering a DagsterInstance sets a context variable to its state storage; when the same
    instance is entered twice (Dagster's test helpers do this), exiting leaves it pointing at the
    disposed instance, and the next Definitions resolved in this process fail with "Attempted to
    resolve undefined DagsterInstance weakref". Clear it after every test."""
    yield
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)


