"""Online lookups of one server process, batched: concurrent requests for the same served
features share one `lookup` (one Redis round trip, one decode).

A request's lookup waits for the end of the event loop's current turn; by then every request
whose task was ready in that turn (under load, several per worker) has joined it, and one
`lookup` answers them all at one instant. Each request gets its own entities' part, exactly what
its own `lookup` at that instant would return. With 16 concurrent clients this cut the server's
CPU per one-entity request by more than a quarter (327 to 234 us), much of which was the fixed
cost of a round trip and a decode (BENCHMARKS.md, Feature server); one client alone waits one
turn of the loop more.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import chain

from feature_pipelines.clock import utc_now
from feature_pipelines.serving.specs import Served
from feature_pipelines.stores.online.lookup import SetValues, lookup
from feature_pipelines.stores.online.redis_store import RedisOnlineStore


@dataclass
class _Batch:
    served: Served
    at: datetime | None
    entities: int = 0
    waiting: list[tuple[dict[str, list], int, asyncio.Future]] = field(default_factory=list)


class BatchedLookups:
    """`lookup` for concurrent requests, batched per served features and requested instant, up to
    `max_entities` entities per batch."""

    def __init__(self, online: RedisOnlineStore, max_entities: int):
        self.online = online
        self.max_entities = max_entities
        self._open: dict[tuple[int, datetime | None], _Batch] = {}

    async def lookup(self, served: Served, entities: dict[str, list], count: int,
                     at: datetime | None) -> tuple[list[SetValues], datetime]:
        """The values of `served` for `count` entities (key columns), at `at` or, without one, at
        the instant their batch is looked up; and that instant. Raises what `lookup` raises."""
        loop = asyncio.get_running_loop()
        key = (id(served), at)  # the batch holds `served`, so its id is not reused while it is open
        batch = self._open.get(key)
        if batch is None or batch.entities + count > self.max_entities:
            batch = self._open[key] = _Batch(served, at)
            loop.call_soon(self._run, key, batch)
        future = loop.create_future()
        batch.waiting.append((entities, count, future))
        batch.entities += count
        return await future

    def _run(self, key: tuple[int, datetime | None], batch: _Batch) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
        waiting = [(entities, count, future) for entities, count, future in batch.waiting if not future.cancelled()]
        if not waiting:
            return
        try:
            at = batch.at or utc_now()
            names = [k.name for k in batch.served.keys]
            entities = waiting[0][0] if len(waiting) == 1 else \
                {name: list(chain.from_iterable(e[name] for e, _, _ in waiting)) for name in names}
            found = lookup(self.online, batch.served.selections, entities, at)
            parts = [found] if len(waiting) == 1 else _split(found, [count for _, count, _ in waiting])
        except Exception as exc:  # every request of the batch answers it (a 503 when Redis is down)
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), part in zip(waiting, parts):
            if not future.done():
                future.set_result((part, at))


def _split(found: list[SetValues], counts: list[int]) -> list[list[SetValues]]:
    """The values of consecutive runs of `counts` entities each."""
    columns = [dict(zip(values.columns, map(values.columns.__getitem__, values.columns))) for values in found]
    parts, start = [], 0
    for count in counts:
        end = start + count
        parts.append([replace(values, ts_micros=values.ts_micros[start:end], expired=values.expired[start:end],
                              columns={name: column[start:end] for name, column in lists.items()})
                      for values, lists in zip(found, columns)])
        start = end
    return parts
