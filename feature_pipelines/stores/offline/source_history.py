"""Read back the recent events of some entities from a source's Delta table: what a streamed
set's rolling state starts from when an entity has none yet (its first streamed event, or Redis
lost the states), so that its first streamed value counts the history batch counts too."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from feature_pipelines.settings import resolve_path
from feature_pipelines.spec.feature_set import Source
from feature_pipelines.stores.offline.delta_files import find_table, read_delta

_DAY_US = 86_400_000_000


def recent_events(source: Source, root: str, keys: Sequence[str], entities: Sequence[tuple], after_us: int,
                  columns: Sequence[str], storage_options: dict[str, str] | None = None) -> pa.Table | None:
    """The events of `entities` (values of `keys`) with event time after `after_us` (some earlier
    ones too, for a source of local times): the key columns, `columns`, the event id, and the
    event time as int64 microseconds (UTC). None when the table does not exist yet."""
    table = find_table(resolve_path(root, source.path), storage_options)
    if table is None:
        return None
    import pyarrow.dataset as ds  # imports pandas: only a processor seeding states gets here

    kind = pa.schema(table.schema().to_arrow()).field(source.timestamp).type
    if kind.tz is None:  # local times (the source's timezone=): a day's margin covers any offset
        after = pa.scalar(after_us - _DAY_US, pa.int64()).cast(pa.timestamp("us"))
    else:
        after = pa.scalar(after_us, pa.int64()).cast(pa.timestamp("us", tz=kind.tz))
    condition = ds.field(source.timestamp) > after  # row groups outside the span are skipped by their statistics
    simple = len(keys) == 1 and source.columns.get(keys[0]) in ("string", "int64", "int32")
    if simple:
        condition &= ds.field(keys[0]).isin([entity[0] for entity in entities])
    wanted = list(dict.fromkeys([*keys, *columns, source.event_id, source.timestamp]))
    rows = read_delta(table, columns=wanted, filter=condition)
    if not simple:  # several keys, or dates and times: compare as events write them
        chosen = {tuple(entity) for entity in entities}
        mask = [entity in chosen for entity in entity_values(rows, keys)]
        rows = rows.filter(pa.array(mask, pa.bool_()))
    times = rows.column(source.timestamp)
    if times.type.tz is None:
        times = pc.assume_timezone(times, source.timezone or "UTC")
    micros = pc.cast(pc.cast(times, pa.timestamp("us", tz="UTC")), pa.int64())
    return rows.set_column(rows.column_names.index(source.timestamp), source.timestamp, micros)


def entity_values(rows: pa.Table, keys: Sequence[str]) -> list[tuple]:
    """Each row's entity as a pushed event gives it: dates and times as ISO text (times in UTC)."""
    return list(zip(*([_event_form(v) for v in rows.column(k).to_pylist()] for k in keys)))


def _event_form(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value
