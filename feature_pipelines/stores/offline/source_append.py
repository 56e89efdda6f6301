"""Append streamed events to their source's Delta table: one commit per micro-batch, each event
once by its event id, so that a micro-batch applied again after a crash adds nothing twice.

The append is a Delta merge that inserts the events whose id the table does not hold. Its
predicate also bounds the table's event time to the micro-batch's range, so only the files whose
statistics overlap that range are read. A micro-batch whose events are all there already makes
no commit at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.spec.feature_set import Source
from feature_pipelines.stores.offline.delta_files import find_table

_ATTEMPTS = 20  # commits lost to concurrent ones (processes of one group append to one table)


def append_events(source: Source, root: str, events: Sequence[dict[str, Any]],
                  storage_options: dict[str, str] | None = None) -> int:
    """Insert `events` (JSON-ready dicts of the source's columns, times as ISO 8601) whose event
    id the table does not hold yet, in one commit; how many were inserted.

    A column of the table that the source does not declare is null, except a partition column,
    which gets the event time's UTC date (`YYYY-MM-DD`): the layout of a source partitioned by day,
    as the example's is. The table is created with the declared columns if it does not exist."""
    if not events:
        return 0
    if source.event_id is None:
        raise ValueError(f"source {source.name!r} declares no event_id; streamed events need one")
    uri = resolve_path(root, source.path)
    batch = _unique(_arrow(source, events), source.event_id)
    for attempt in range(_ATTEMPTS):
        try:
            return _append(source, uri, batch, events, storage_options)
        except CommitFailedError:
            # Another processor of the group committed meanwhile: read the table again and merge
            # again (ids it added are skipped).
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")


def _append(source: Source, uri: str, batch: pa.Table, events: Sequence[dict[str, Any]],
            storage_options: dict[str, str] | None) -> int:
    table = find_table(uri, storage_options)
    if table is None:
        try:
            write_deltalake(uri, batch, mode="error", storage_options=storage_options or None)
            return batch.num_rows
        except DeltaError:
            table = find_table(uri, storage_options)  # another processor created it first: merge
            if table is None:
                raise
    fields = pa.schema(table.schema().to_arrow())
    for name in table.metadata().partition_columns:
        if name not in batch.column_names:
            days = [_day(event[source.timestamp]) for event in events]
            batch = batch.append_column(name, pa.array(days, pa.string()).cast(fields.field(name).type))
    times = [event[source.timestamp] for event in events]
    low, high = min(times, key=_instant), max(times, key=_instant)
    stamp = source.timestamp
    predicate = (f"t.{source.event_id} = s.{source.event_id} AND t.{stamp} >= '{_literal(low)}' "
                 f"AND t.{stamp} <= '{_literal(high)}'")
    result = (table.merge(batch, predicate, source_alias="s", target_alias="t")
              .when_not_matched_insert_all().execute())
    return int(result["num_target_rows_inserted"])


def _arrow(source: Source, events: Sequence[dict[str, Any]]) -> pa.Table:
    columns = {}
    for name, dtype in source.columns.items():
        values = [event.get(name) for event in events]
        if dtype == "timestamp":
            values = [None if v is None else datetime.fromisoformat(v) for v in values]
        elif dtype == "date":
            values = [None if v is None else date.fromisoformat(v) for v in values]
        columns[name] = pa.array(values, arrow_type(dtype))
    return pa.table(columns)


def _unique(batch: pa.Table, event_id: str) -> pa.Table:
    """The first event of each id (a producer may send one twice in a micro-batch)."""
    ids = batch.column(event_id).to_pylist()
    first: dict[Any, int] = {}
    for row, value in enumerate(ids):
        first.setdefault(value, row)
    return batch if len(first) == len(ids) else batch.take(sorted(first.values()))


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _literal(iso: str) -> str:
    """An ISO time as a Delta predicate literal, in UTC with microseconds."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _day(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).date().isoformat()
