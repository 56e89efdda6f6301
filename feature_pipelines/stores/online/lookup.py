"""Online lookups: the values some feature sets hold for some entities at one instant.

This is the one implementation of reading online values and of their expiry (SEMANTICS.md,
"Online store"): a value whose age at the instant exceeds its set's `temporal_join_lookback` is
missing. `FeatureStore.get_online_features` and the feature server both call `lookup`, so what
a model reads in process and over HTTP cannot differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from feature_pipelines.errors import RetrievalError
from feature_pipelines.spec.durations import epoch_micros, micros
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.online.redis_store import RedisOnlineStore

PRESENT, NOT_FOUND, EXPIRED = "present", "not_found", "expired"


@dataclass(frozen=True)
class SetValues:
    """One feature set's values for each entity of a lookup, in the entities' order."""

    selection: FeatureSelection
    ts_micros: np.ndarray  # the stored value's ts, microseconds since the epoch; -1 where nothing is stored
    expired: np.ndarray  # stored, but older than temporal_join_lookback at the instant
    columns: dict[str, list]  # output column -> values; None where nothing is stored or it expired

    def statuses(self) -> list[str]:
        """`present`, `not_found` or `expired`, per entity."""
        found = (self.ts_micros >= 0).tolist()
        return [EXPIRED if old else PRESENT if there else NOT_FOUND for there, old in zip(found, self.expired.tolist())]


def lookup(online: RedisOnlineStore, selections: Sequence[FeatureSelection], entities: Mapping[str, Sequence],
           now: datetime) -> list[SetValues]:
    """The values of each selection for the entities given as key columns (equal lengths), as
    they are at `now` (UTC-aware), in one round trip to Redis."""
    for selection in selections:
        missing = [k for k in selection.feature_set.entity_names if k not in entities]
        if missing:
            raise RetrievalError(f"entity rows lack key column(s) {missing} of feature set {selection.feature_set.key}.")
    requests = [(s.feature_set, list(zip(*(entities[k] for k in s.feature_set.entity_names)))) for s in selections]
    moment_us = epoch_micros(now)
    found = []
    for selection, decoded in zip(selections, online.read_many(requests)):
        ttl = selection.feature_set.ttl
        stored = decoded.ts_micros >= 0
        expired = stored & (moment_us - decoded.ts_micros > micros(ttl)) if ttl is not None else np.zeros_like(stored)
        hidden = np.flatnonzero(~stored | expired).tolist()
        columns = {}
        for feature, column in zip(selection.features, selection.columns):
            values = decoded.columns[feature]
            if hidden and len(hidden) < len(values):
                values = list(values)
                for i in hidden:
                    values[i] = None
            elif hidden:
                values = [None] * len(values)
            columns[column] = values
        found.append(SetValues(selection, decoded.ts_micros, expired, columns))
    return found
