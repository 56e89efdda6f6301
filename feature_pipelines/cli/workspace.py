"""What the `featurestore` commands share: one `Workspace` per command invocation.

Each part is built on first use, so `featurestore list` reads the catalog and the offline store
only, and no command starts Spark, Redis or a Dagster instance it does not need. The imports are
deferred for the same reason: `featurestore --help` loads neither Dagster nor the stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from feature_pipelines.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions

    from feature_pipelines.planning.source_changes import SourceFile
    from feature_pipelines.spec.catalog import Catalog
    from feature_pipelines.spec.feature_set import FeatureSet
    from feature_pipelines.spec.retrieval_spec import RetrievalSpec
    from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore


class Workspace:
    """Settings (read from the environment when first asked, once per invocation), the catalog,
    the offline store and the retrieval specs, plus the Dagster instance, the code location and
    the online server for the commands that use them."""

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    @cached_property
    def catalog(self) -> Catalog:
        from feature_pipelines.spec.catalog import load_catalog

        return load_catalog(self.settings.feature_defs_dir)

    @cached_property
    def offline(self) -> DeltaOfflineStore:
        from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore

        return DeltaOfflineStore(self.settings.offline_uri, self.settings.offline_storage_options)

    @cached_property
    def retrieval_specs(self) -> list[RetrievalSpec]:
        from feature_pipelines.spec.retrieval_spec import load_retrieval_specs

        return load_retrieval_specs(self.retrieval_specs_dir)

    @property
    def retrieval_specs_dir(self) -> Path:
        return self.settings.feature_defs_dir / "retrieval_specs"

    def feature_set(self, name: str, version: int | None = None) -> FeatureSet:
        """The named feature set from the catalog; the latest version when `version` is None."""
        return self.catalog.get(name, version)

    def retrieval_spec_path(self, name_or_path: str) -> str:
        """A retrieval spec given by file path, or by name in feature_defs/retrieval_specs/."""
        if Path(name_or_path).exists():
            return name_or_path
        candidate = self.retrieval_specs_dir / f"{name_or_path}.yaml"
        if candidate.exists():
            return str(candidate)
        from feature_pipelines.errors import RetrievalError

        raise RetrievalError(f"retrieval spec {name_or_path!r} is neither a file nor a spec in {candidate.parent}.")

    def source_files(self, feature_set: FeatureSet) -> list[SourceFile]:
        """The files of the feature set's source table now (from its Delta log)."""
        from feature_pipelines.planning.source_changes import open_source, source_files

        table = open_source(feature_set.source, self.settings.source_root, self.settings.source_storage_options)
        return source_files(table, feature_set.source)

    def check_source(self, feature_set: FeatureSet) -> None:
        """Refuse a run the source would fail (missing table or column, wrong type, naive times, no
        rows) from its Delta log, before any run is recorded or Spark starts."""
        from feature_pipelines.compute.source_schema import check_source

        check_source(feature_set.source, self.settings.source_root, self.settings.source_storage_options)

    def definitions(self) -> Definitions:
        """The Dagster code location for this workspace's catalog and stores."""
        from feature_pipelines.orchestration.code_location import build_definitions

        return build_definitions(self.settings, self.catalog)

    def dagster_home(self) -> Path:
        """`DAGSTER_HOME`, set to the project's `.dagster_home` when unset."""
        from feature_pipelines.orchestration.dagster_home import ensure_dagster_home

        return ensure_dagster_home()

    @contextmanager
    def dagster_instance(self) -> Iterator[DagsterInstance]:
        """The Dagster instance of `DAGSTER_HOME`, open for the block. Runs of this machine whose
        process was killed are failed (and their writer slots freed) first, with a note on stderr."""
        import click
        from dagster import DagsterInstance

        from feature_pipelines.orchestration.dead_runs import reap_dead_runs

        self.dagster_home()
        with DagsterInstance.get() as instance:
            for reaped in reap_dead_runs(instance):
                click.secho(f"note: {reaped.describe()}", fg="yellow", err=True)
            yield instance

    @contextmanager
    def online_server(self) -> Iterator[str]:
        """The Redis URL for the block; the local redis-server is started when none is set."""
        if self.settings.redis_url:
            yield self.settings.redis_url
            return
        from feature_pipelines.stores.online.local_redis import LocalRedisServer

        with LocalRedisServer(self.settings.data_dir / "redis") as server:
            yield server.url
