"""Retiring a feature set version: its online values, window log and offline table are deleted.

Versions stay retrievable side by side until retired. Only a version that is no longer declared
in `feature_defs/` and that no retrieval spec uses can be retired, so nothing still in use loses
its data. Retiring is safe to repeat: a retirement cut short finishes on the next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.errors import CatalogError
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore, namespace
from feature_pipelines.spec.feature_set import VersionRef
from feature_pipelines.spec.retrieval_spec import RetrievalSpec


@dataclass(frozen=True)
class Retirement:
    """What retiring a version will delete."""

    ref: VersionRef
    table_uri: str
    windows: int
    rows: int
    online_keys: int

    def summary(self) -> str:
        return (f"{self.ref.name} v{self.ref.version}: offline table {self.table_uri} ({self.windows} window(s), "
                f"{self.rows} rows) and its window log; {self.online_keys} online value(s) "
                f"({namespace(self.ref)}*)")


def plan_retirement(
    ref: VersionRef, catalog: Catalog, specs: list[RetrievalSpec], offline: DeltaOfflineStore,
    online: RedisOnlineStore,
) -> Retirement:
    """Check that the version may be retired and count what it holds."""
    name, version = ref.name, ref.version
    for feature_set in catalog:
        if feature_set.ref == ref:
            raise CatalogError(
                f"{name} v{version} is still declared in {catalog.file_of(feature_set)}; remove that "
                "declaration first (its asset, schedule and sensor would otherwise stay), then retire it."
            )
    users = [s.name for s in specs if any(r.feature_set == name and r.version == version for r in s.features)]
    if users:
        raise CatalogError(f"{name} v{version} is used by retrieval spec(s) {', '.join(sorted(users))}; "
                           f"move them to another version first.")
    windows = offline.materialized_windows(ref)
    retirement = Retirement(
        ref=ref, table_uri=offline.table_uri(ref), windows=len(windows),
        rows=sum(int(w["rows"]) for w in windows.values()), online_keys=online.count(ref),
    )
    if not windows and not retirement.online_keys and not offline.exists(ref):
        raise CatalogError(f"nothing is stored for {name} v{version} (offline root {offline.root}); "
                           "check the name and version.")
    return retirement


def retire(retirement: Retirement, offline: DeltaOfflineStore, online: RedisOnlineStore) -> int:
    """Delete the version from both stores: online first (it stops being served), then offline.
    Return the number of online keys deleted."""
    deleted = online.delete_version(retirement.ref)
    offline.delete_version(retirement.ref)
    return deleted

