"""Which offline rows a retrieval can use: per feature set, the windows observations in
[t_min, t_max] can draw from, and that feature set's table opened once for the whole retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from feature_pipelines.planning.windows import window_containing
from feature_pipelines.spec.feature_set import WINDOW_KEY_COLUMN, FeatureSet
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, OfflineTable

TimeSpan = tuple[datetime, datetime]  # the earliest and latest observation time, UTC


def key_range(feature_set: FeatureSet, t_min: datetime, t_max: datetime) -> tuple[str, str] | None:
    """The first and last window keys that can hold a row matching observations in
    [t_min, t_max], or None when none can (string order is time order for window keys)."""
    first_start = feature_set.partitions.start
    newest = t_max - feature_set.delay
    oldest = max(first_start, t_min - feature_set.ttl) if feature_set.ttl else first_start
    if newest < first_start or oldest > newest:
        return None
    return window_containing(feature_set, oldest).key, window_containing(feature_set, newest).key


@dataclass(frozen=True)
class FeatureSpan:
    """A feature selection and the windows `first`..`last` of its offline table that the
    observations can match. `table` is None when no row can match: no window is in reach,
    or none was ever written."""

    selection: FeatureSelection
    table: OfflineTable | None = None
    first: str = ""
    last: str = ""

    @property
    def columns(self) -> list[str]:
        """The offline columns the join reads: keys, timestamp and the selected features."""
        feature_set = self.selection.feature_set
        return [*feature_set.entity_names, feature_set.timestamp, *self.selection.features]

    def rows(self) -> int:
        """Rows in the span, from the Delta log's file statistics (no data is read)."""
        if self.table is None:
            return 0
        actions = pa.table(self.table.delta.get_add_actions(flatten=True))
        part = actions.column(f"partition.{WINDOW_KEY_COLUMN}")
        inside = pc.and_(pc.greater_equal(part, self.first), pc.less_equal(part, self.last))
        return int(pc.sum(pc.filter(actions.column("num_records"), inside)).as_py() or 0)


def feature_spans(
    offline: DeltaOfflineStore, selections: Sequence[FeatureSelection], span: TimeSpan | None
) -> list[FeatureSpan]:
    """One FeatureSpan per selection; without observations (`span` None) nothing is opened."""
    result = []
    for selection in selections:
        keys = None if span is None else key_range(selection.feature_set, *span)
        table = None if keys is None else offline.open(selection.feature_set)
        if keys is None or table is None or not table.exists:
            result.append(FeatureSpan(selection))
        else:
            result.append(FeatureSpan(selection, table, *keys))
    return result
