"""Retiring a feature set version: its online values, its asset history in the Dagster
instance, its window log and its offline table are deleted.

Versions stay retrievable side by side until retired. Only a version that is no longer declared
in `feature_defs/` and that no retrieval spec uses can be retired, so nothing still in use loses
its data. Retiring is safe to repeat: a retirement cut short finishes on the next attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    asset_history: tuple[str, ...] = ()  # the version's assets with a history in the Dagster instance

    def summary(self) -> str:
        history = (f"; the Dagster asset history of {', '.join(self.asset_history)} (its materializations and "
                   "check results, so the UI stops listing them)" if self.asset_history else "")
        return (f"{self.ref.name} v{self.ref.version}: offline table {self.table_uri} ({self.windows} window(s), "
                f"{self.rows} rows) and its window log; {self.online_keys} online value(s) "
                f"({namespace(self.ref)}*){history}")


def plan_retirement(
    ref: VersionRef, catalog: Catalog, specs: list[RetrievalSpec], offline: DeltaOfflineStore,
    online: RedisOnlineStore, asset_history: Sequence[str] = (),
) -> Retirement:
    """Check that the version may be retired and count what it holds; `asset_history` names its
    assets that the Dagster instance holds a history of."""
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
        asset_history=tuple(asset_history),
    )
    if not windows and not retirement.online_keys and not offline.exists(ref) and not asset_history:
        raise CatalogError(f"nothing is stored for {name} v{version} (offline root {offline.root}); "
                           "check the name and version.")
    return retirement


def retire(retirement: Retirement, offline: DeltaOfflineStore, online: RedisOnlineStore,
           forget_history: Callable[[], None] = lambda: None) -> int:
    """Delete the version: online first (it stops being served), then its asset history
    (`forget_history`), then offline. Return the number of online keys deleted."""
    deleted = online.delete_version(retirement.ref)
    forget_history()
    # The offline table goes last: until it is gone, `featurestore list` shows the version as
    # stored but undeclared, so a retirement cut short anywhere is seen and finished by a rerun.
    offline.delete_version(retirement.ref)
    return deleted

