"""Discovery: list, search and describe feature sets, with their live state.

`describe` joins what the spec says with what the stores and the Dagster instance know: the
materialized windows, freshness, the last runs and the retrieval specs that use the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from feature_pipelines.spec.durations import format_duration
from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.spec.retrieval_spec import RetrievalSpec
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.planning.window_status import (
    BEHIND, NO_SOURCE_DATA, QUARANTINED, STATUSES, WindowStatus, describe_status,
)
from feature_pipelines.planning.windows import describe_keys

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from feature_pipelines.spec.feature_set import VersionRef
    from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore


@dataclass(frozen=True)
class UndeclaredVersion:
    """A version the offline store holds that no file in feature_defs/ declares any more."""

    ref: VersionRef
    windows: int
    rows: int

    def describe(self) -> str:
        return (f"{self.ref.key}: {self.windows} window(s), {self.rows} rows; delete it with "
                f"`featurestore retire {self.ref.name} --version {self.ref.version}`")


def undeclared_versions(catalog: Catalog, offline: DeltaOfflineStore) -> list[UndeclaredVersion]:
    """The versions holding windows in the offline store that the catalog does not declare (a
    deleted or renumbered declaration leaves its data, online values and Dagster assets behind)."""
    declared = {feature_set.ref for feature_set in catalog}
    found = []
    for ref in offline.stored_versions():
        if ref in declared:
            continue
        windows = offline.materialized_windows(ref)
        if windows:  # an emptied table left behind by a retirement on an object store holds nothing
            found.append(UndeclaredVersion(ref, len(windows), sum(int(w["rows"]) for w in windows.values())))
    return found


def search(catalog: Catalog, query: str) -> list[tuple[FeatureSet, list[str]]]:
    """Feature sets matching `query` (case-insensitive) in their name, description, tags, owners,
    entities or features, each with the fields that matched."""
    needle = query.lower()
    found = []
    for feature_set in catalog:
        fields = {
            "name": [feature_set.name],
            "description": [feature_set.description],
            "tag": [f"{k}={v}" for k, v in feature_set.tags.items()],
            "owner": list(feature_set.owners),
            "entity": [e.name for e in feature_set.entities] + [e.description for e in feature_set.entities],
            "feature": [f.name for f in feature_set.features] + [f.description for f in feature_set.features],
            "source": [feature_set.source.name],
        }
        hits = [field for field, values in fields.items() if any(needle in (v or "").lower() for v in values)]
        if hits:
            found.append((feature_set, hits))
    return found


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    at: datetime
    windows: str
    rows: int | None


@dataclass(frozen=True)
class Description:
    feature_set: FeatureSet
    versions: list[int]
    statuses: list[WindowStatus]  # every complete window's
    freshness_lag: str
    runs: list[RunSummary]
    used_by: list[str]

    @property
    def windows(self) -> list[str]:
        """The complete windows the offline store holds (stale or re-running ones included)."""
        return [s.key for s in self.statuses if s.materialized_at is not None]

    def keys(self, status: str) -> list[str]:
        return [s.key for s in self.statuses if s.status == status]


def describe(
    feature_set: FeatureSet,
    catalog: Catalog,
    statuses: list[WindowStatus],
    instance: DagsterInstance | None,
    retrieval_specs: list[RetrievalSpec],
    run_limit: int = 5,
) -> Description:
    """`statuses`: the status of every complete window (`feature_set_statuses`)."""
    return Description(
        feature_set=feature_set,
        versions=sorted(other.version for other in catalog if other.name == feature_set.name),
        statuses=statuses,
        freshness_lag=freshness_lag(statuses),
        runs=_last_runs(instance, feature_set, run_limit) if instance is not None else [],
        used_by=[retrieval_spec.name for retrieval_spec in retrieval_specs
                 if any(r.feature_set == feature_set.name and r.version == feature_set.version
                        for r in retrieval_spec.features)],
    )


def freshness_lag(statuses: list[WindowStatus]) -> str:
    """How far the store is behind its source: the missing, failed or quarantined windows after
    the newest materialized one. Windows the source has no data for yet do not count; quarantined
    windows count as behind, not as materialized (retrieval refuses them)."""
    if not statuses:
        return "no complete window yet"
    last = statuses[-1].key
    reached = [s for s in statuses if s.status != NO_SOURCE_DATA]
    if not reached:
        return f"the source has no data for any complete window yet (last complete {last})"
    newest = reached[-1].key
    done = [s.key for s in statuses if s.materialized_at is not None and s.status != QUARANTINED]
    behind = [s.key for s in reached if s.status in BEHIND and (not done or s.key > done[-1])]
    if not done:
        held = any(s.status == QUARANTINED for s in statuses)
        return (f"{'every materialized window is quarantined' if held else 'never materialized'}; "
                f"the source has data up to window {newest}")
    if behind:
        return f"{len(behind)} window(s) behind: newest materialized {done[-1]}, the source has data up to {newest}"
    if newest == last:
        return f"up to date (last complete window {last} is materialized)"
    return f"up to date with the source (its newest window with data, {newest}, is materialized)"


def render(description: Description) -> str:
    """The text `featurestore describe` prints."""
    feature_set = description.feature_set
    declared = feature_set.describe()
    source, materialization = feature_set.source, feature_set.materialization
    lines = [
        f"{feature_set.key}  ({feature_set.description or 'no description'})",
        f"  versions:        {', '.join(f'v{v}' for v in description.versions)}",
        f"  owners:          {', '.join(feature_set.owners) or '-'}",
        f"  tags:            {', '.join(f'{k}={v}' for k, v in feature_set.tags.items()) or '-'}",
        f"  entities:        {', '.join(f'{e.name} ({e.dtype})' for e in feature_set.entities)}",
        f"  source:          {source.name} ({source.format}, path {source.path}, event time {source.timestamp})",
        f"  compute:         {declared['compute']}",
        f"  windows:         {feature_set.partitions.cadence} from {declared['first_window']}",
        f"  source_lookback: {declared['source_lookback']}   source_delay: {declared['source_delay']}   "
        f"temporal_join_lookback: {declared['temporal_join_lookback'] or 'none'}",
        f"  stores:          offline {'on' if materialization.offline else 'off'}, "
        f"online {'on' if materialization.online else 'off'}"
        f"{f', streamed (events of source {source.name}, id {source.event_id})' if materialization.stream else ''}"
        "; schedule "
        f"{'on' if materialization.schedule_enabled else 'off'} by default, "
        f"{format_duration(feature_set.schedule_delay)} after close",
        "  features:",
    ]
    width = max(len(f.name) for f in feature_set.features)
    lines += [f"    {f.name:<{width}}  {f.dtype:<9} {f.description or ''}".rstrip() for f in feature_set.features]
    done = description.windows
    lines.append(f"  materialized:    {len(done)} window(s): {describe_keys(done, feature_set)}" if done
                 else "  materialized:    none")
    for status in STATUSES[1:]:
        keys = description.keys(status)
        if keys:
            lines.append(f"  {status + ':':<17}{len(keys)} window(s): "
                         f"{describe_status(description.statuses, status, feature_set)}")
    lines.append(f"  freshness:       {description.freshness_lag}; each window is due "
                 f"{format_duration(feature_set.freshness_deadline)} after it closes")
    lines.append("  last runs:" if description.runs else "  last runs:       none recorded on this Dagster instance")
    for run in description.runs:
        rows = "-" if run.rows is None else str(run.rows)
        lines.append(f"    {run.at:%Y-%m-%d %H:%M:%S}  {run.run_id[:8]}  {run.windows}  {rows} rows")
    lines.append(f"  used by:         {', '.join(description.used_by) or 'no retrieval spec'}")
    return "\n".join(lines)


def _last_runs(instance: DagsterInstance, feature_set: FeatureSet, limit: int) -> list[RunSummary]:
    from dagster import AssetKey

    records = instance.fetch_materializations(AssetKey([feature_set.key]), limit=limit * 50).records
    by_run: dict[str, RunSummary] = {}
    for record in records:  # newest first; one materialization per window, grouped by run
        if record.run_id in by_run:
            continue
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        windows = metadata.get("windows")
        rows = metadata.get("dagster/row_count")
        by_run[record.run_id] = RunSummary(
            run_id=record.run_id,
            at=datetime.fromtimestamp(record.timestamp).astimezone(),
            windows=str(windows.value) if windows is not None else "",
            rows=int(rows.value) if rows is not None else None,
        )
        if len(by_run) == limit:
            break
    return list(by_run.values())
