"""Which windows a backfill takes, and whether they can be computed yet.

Pure rules: the window log, the windows' run states (from Dagster, see
`orchestration.window_states`) and the source's newest event come in as plain values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from feature_pipelines.errors import WindowError
from feature_pipelines.planning.window_status import FAILED
from feature_pipelines.planning.windows import Window, describe_keys, window_for_key
from feature_pipelines.spec.feature_set import FeatureSet


def select_windows(
    windows: list[Window],
    *,
    materialized: Collection[str],
    run_states: Mapping[str, str | None],
    only_missing: bool = False,
    failed: bool = False,
) -> list[str]:
    """The keys of `windows` to backfill: all of them, or those not in `materialized`
    (`only_missing`), or those whose last Dagster attempt failed (`failed`), or both kinds."""
    keys = [w.key for w in windows]
    if not (only_missing or failed):
        return keys
    chosen: set[str] = set()
    if only_missing:
        chosen |= {k for k in keys if k not in materialized}
    if failed:
        chosen |= {k for k in keys if run_states.get(k) == FAILED}
    return [k for k in keys if k in chosen]


def check_windows_closed(feature_set: FeatureSet, keys: list[str], now: datetime) -> None:
    """Refuse windows that have not closed yet at `now`."""
    open_windows = [k for k in keys if window_for_key(feature_set, k).end > now]
    if open_windows:
        raise WindowError(
            f"windows {describe_keys(open_windows, feature_set)} of {feature_set.key} have not closed yet "
            f"(now is {now.isoformat()}); backfill only complete windows."
        )


def check_source_reaches(feature_set: FeatureSet, keys: list[str], newest_event: datetime | None) -> None:
    """Refuse windows that start after the source's newest event (None: the source holds no rows)."""
    ahead = [k for k in keys if newest_event is None or window_for_key(feature_set, k).start > newest_event]
    if ahead:
        reached = "holds no rows" if newest_event is None else f"has its newest event at {newest_event.isoformat()}"
        raise WindowError(
            f"windows {describe_keys(ahead, feature_set)} of {feature_set.key} have no source data yet: source "
            f"{feature_set.source.name!r} {reached}. Load the source data first, or pass --force to "
            "materialize them empty."
        )
