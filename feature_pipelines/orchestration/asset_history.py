"""A feature set version's asset history in the Dagster instance: its materializations and check
results. A version removed from `feature_defs/` keeps that history, and the UI goes on listing its
assets (ungrouped, with no definition) until the history is wiped, which retiring the version does."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance

from feature_pipelines.orchestration.assets import online_key
from feature_pipelines.spec.feature_set import Versioned


def recorded_assets(instance: DagsterInstance, ref: Versioned) -> list[AssetKey]:
    """The version's assets (offline, online) that the instance holds a history of."""
    known = set(instance.all_asset_keys())
    return [key for key in (AssetKey([ref.key]), online_key(ref)) if key in known]


def wipe_history(instance: DagsterInstance, keys: list[AssetKey]) -> None:
    """Wipe the assets' history (materializations, check results); Dagster records the wipe itself."""
    if keys:
        instance.wipe_assets(keys)
