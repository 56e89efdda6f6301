"""Dagster resources: the Spark session, the source root, and the offline and online stores.

Each is configured from `Settings` (the environment) with local defaults, so moving to a
cluster is configuration only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from feature_pipelines.stores.online.local_redis import LocalRedisServer
from feature_pipelines.compute.spark_session import spark_config
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.settings import Settings


class SourcesResource(ConfigurableResource):
    """Where source tables live: relative `Source.path`s resolve against `root`."""

    root: str
    storage_options: dict[str, str] = {}


class OfflineStoreResource(ConfigurableResource):
    """The Delta offline store (runs write their files into each table's own location)."""

    uri: str
    storage_options: dict[str, str] = {}

    def store(self) -> DeltaOfflineStore:
        return DeltaOfflineStore(self.uri, dict(self.storage_options))


class OnlineStoreResource(ConfigurableResource):
    """The Redis online store. Without `redis_url`, a local `redis-server` is started in `local_dir`."""

    redis_url: str | None = None
    local_dir: str = ""

    _server: LocalRedisServer | None = PrivateAttr(default=None)
    _store: RedisOnlineStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = self.redis_url
        if not url:
            self._server = LocalRedisServer(Path(self.local_dir)).start()
            url = self._server.url
        # No ping here: an unreachable Redis must fail the publish step, not the offline write.
        self._store = RedisOnlineStore.from_url(url, socket_timeout=30)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._store is not None:
            self._store.client.close()
        if self._server is not None:
            self._server.stop()

    def store(self) -> RedisOnlineStore:
        if self._store is None:
            raise RuntimeError("OnlineStoreResource used outside of a run")
        return self._store


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources every feature store asset and job uses."""
    return {
        # Lazy: runs that never touch Spark (a local-engine training set) do not start a JVM.
        "pyspark": LazyPySparkResource(spark_config=spark_config(settings)),
        "sources": SourcesResource(root=settings.source_root, storage_options=settings.source_storage_options),
        "offline_store": OfflineStoreResource(
            uri=settings.offline_uri,
            storage_options=settings.offline_storage_options,
        ),
        "online_store": OnlineStoreResource(redis_url=settings.redis_url, local_dir=str(settings.data_dir / "redis")),
    }
