"""Online lookups: the values some feature sets hold for some entities at one instant.

This is the one implementation of reading online values and of their expiry (SEMANTICS.md,
"Online store"): a value whose age at the instant exceeds its set's `temporal_join_lookback` is
missing. `FeatureStore.get_online_features` and the feature server both call `lookup`, so what
a model reads in process and over HTTP cannot differ.

A streamed row holds until its `valid_until` (the next instant an aggregate changes); a row
read at or after it is evaluated again from the entity's rolling state at the lookup's instant
(one more MGET, of those entities' states only), so streamed values are exact at any instant
without a timer rewriting them. Rows still valid, and rows published from the offline store,
cost nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from feature_pipelines.errors import RetrievalError
from feature_pipelines.spec.durations import epoch_micros, micros
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.online.codec import DecodedValues
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.stores.online.redis_store import RedisOnlineStore

PRESENT, NOT_FOUND, EXPIRED = "present", "not_found", "expired"


@dataclass(frozen=True)
class SetValues:
    """One feature set's values for each entity of a lookup, in the entities' order."""

    selection: FeatureSelection
    ts_micros: np.ndarray  # the stored value's ts, microseconds since the epoch; -1 where nothing is stored
    expired: np.ndarray  # stored, but older than temporal_join_lookback at the instant
    columns: Mapping[str, list]  # output column -> values; None where null, nothing is stored or it expired

    def statuses(self) -> list[str]:
        """`present`, `not_found` or `expired`, per entity."""
        found = (self.ts_micros >= 0).tolist()
        return [EXPIRED if old else PRESENT if there else NOT_FOUND for there, old in zip(found, self.expired.tolist())]


class ValueColumns(Mapping[str, list]):
    """Output column -> one feature set's values per entity, as `SetValues.columns`: the lists are
    built on first access, since a DataFrame is built from `blocks` (typed arrays) instead."""

    def __init__(self, selection: FeatureSelection, decoded: DecodedValues):
        self._selection = selection
        self._decoded = decoded
        self._lists: dict[str, list] | None = None

    def __getitem__(self, column: str) -> list:
        if self._lists is None:
            self._lists = dict(zip(self._selection.columns, self._decoded.lists(self._selection.features)))
        return self._lists[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._selection.columns)

    def __len__(self) -> int:
        return len(self._selection.columns)

    def blocks(self) -> list[tuple[list[int], np.ndarray]]:
        """The columns as typed 2-D arrays (`DecodedValues.blocks`), positions in selection.columns."""
        return self._decoded.blocks(self._selection.features)


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
    for (feature_set, keys), selection, decoded in zip(requests, selections, online.read_many(requests)):
        until = decoded.valid_until_micros
        if len(until) and until.max() >= 0:  # streamed rows: those no longer valid are evaluated again
            outdated = np.flatnonzero((until >= 0) & (until <= moment_us))
            if len(outdated):
                _evaluate_states(online, feature_set, keys, outdated, decoded, moment_us)
        ttl = selection.feature_set.ttl
        stored = decoded.ts_micros >= 0
        expired = stored & (moment_us - decoded.ts_micros > micros(ttl)) if ttl is not None else np.zeros_like(stored)
        decoded.hide(expired)  # values not stored are null already
        found.append(SetValues(selection, decoded.ts_micros, expired, ValueColumns(selection, decoded)))
    return found


def _evaluate_states(online: RedisOnlineStore, feature_set: FeatureSet, entities: Sequence[tuple],
                     rows: np.ndarray, decoded: DecodedValues, at_us: int) -> None:
    """Replace the values of `rows` (streamed rows no longer valid at `at_us`) by their rolling
    state's at `at_us`. A row whose state is gone keeps its stored values."""
    states = online.read_states(feature_set, [entities[i] for i in rows.tolist()])
    kernel, codec = online.rolling_state(feature_set), online.codec(feature_set)
    kept, raw = [], []
    for row, state in zip(rows.tolist(), states):
        if state is None:
            continue
        values, change_us, until_us = kernel.evaluate(state, at_us)
        kept.append(row)
        raw.append(None if change_us is None else
                   codec.encode_micros(change_us, dict(zip(kernel.feature_names, values)), until_us))
    if kept:
        decoded.put(np.array(kept, dtype=np.intp), codec.decode_many(raw))
