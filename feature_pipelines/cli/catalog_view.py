"""Discovery: list, search and describe feature sets, with their live state.

`describe` joins what the spec says with what the stores and the Dagster instance know: the
materialized windows, freshness, the last runs and the retrieval specs that use the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dagster import AssetKey, DagsterInstance

from feature_pipelines.spec.durations import format_duration
from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.spec.retrieval_spec import RetrievalSpec
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.planning.window_status import last_complete_window
from feature_pipelines.planning.windows import describe_keys, window_containing, windows_between


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
    windows: list[str]
    missing: list[str]
    last_complete: str
    freshness_lag: str
    runs: list[RunSummary]
    used_by: list[str]


def describe(
    feature_set: FeatureSet,
    catalog: Catalog,
    offline: DeltaOfflineStore,
    instance: DagsterInstance | None,
    retrieval_specs: list[RetrievalSpec],
    now: datetime,
    run_limit: int = 5,
) -> Description:
    done = sorted(offline.materialized_windows(feature_set))
    last = last_complete_window(feature_set, now)
    first = window_containing(feature_set, feature_set.partitions.start).key
    expected = [w.key for w in windows_between(feature_set, first, last)] if first <= last else []
    present = set(done)
    missing = [k for k in expected if k not in present]
    if not done:
        lag = "never materialized"
    elif done[-1] >= last:
        lag = "up to date (last complete window is materialized)"
    else:
        behind = len([k for k in expected if k > done[-1]])
        lag = f"{behind} window(s) behind: newest materialized {done[-1]}, last complete {last}"
    return Description(
        feature_set=feature_set,
        versions=sorted(other.version for other in catalog if other.name == feature_set.name),
        windows=done,
        missing=missing,
        last_complete=last,
        freshness_lag=lag,
        runs=_last_runs(instance, feature_set, run_limit) if instance is not None else [],
        used_by=[retrieval_spec.name for retrieval_spec in retrieval_specs
                 if any(r.feature_set == feature_set.name and r.version == feature_set.version
                        for r in retrieval_spec.features)],
    )


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
        f"online {'on' if materialization.online else 'off'}; schedule "
        f"{'on' if materialization.schedule_enabled else 'off'} by default, "
        f"{format_duration(feature_set.schedule_delay)} after close",
        "  features:",
    ]
    width = max(len(f.name) for f in feature_set.features)
    lines += [f"    {f.name:<{width}}  {f.dtype:<9} {f.description or ''}".rstrip() for f in feature_set.features]
    if description.windows:
        lines.append(f"  materialized:    {len(description.windows)} window(s): "
                     f"{describe_keys(description.windows, feature_set)}")
    else:
        lines.append("  materialized:    none")
    if description.missing:
        lines.append(f"  missing:         {len(description.missing)} complete window(s): "
                     f"{describe_keys(description.missing, feature_set)}")
    lines.append(f"  freshness:       {description.freshness_lag}; each window is due "
                 f"{format_duration(feature_set.freshness_deadline)} after it closes")
    lines.append("  last runs:" if description.runs else "  last runs:       none recorded on this Dagster instance")
    for run in description.runs:
        rows = "-" if run.rows is None else str(run.rows)
        lines.append(f"    {run.at:%Y-%m-%d %H:%M:%S}  {run.run_id[:8]}  {run.windows}  {rows} rows")
    lines.append(f"  used by:         {', '.join(description.used_by) or 'no retrieval spec'}")
    return "\n".join(lines)


def _last_runs(instance: DagsterInstance, feature_set: FeatureSet, limit: int) -> list[RunSummary]:
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
