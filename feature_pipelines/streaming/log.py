"""The event log: pushed events, durable in Redis Streams until the stream processor has applied
them (online) and appended them to their source's Delta table (offline).

One stream per source, `fsevents:<source>`; one entry per event, whose field `event` is the JSON
object of the source's columns (`events.EventBatch.encoded`: times as ISO 8601 with `+00:00`).
Any producer that writes entries of that form (`XADD fsevents:transactions * event '{...}'`) is
read like a push. A stream is one key, so one Redis Cluster slot: a push is one MULTI/EXEC there.

Consumers read in consumer groups (one per processor deployment; processes of one deployment
share the group and split its entries), acknowledge what they applied, and claim entries that a
dead consumer read but never acknowledged. Entries are delivered at least once; the processor
applies each event id once (the online state's union by event id, the Delta append's dedup).

The log is never trimmed by length, which would drop events no processor has applied:
`trim(source, before)` drops entries by id, for the processor to call once they are acknowledged
and appended to the Delta source. Instead, a log that holds `max_entries` entries refuses pushes
(`EventLogError`, the server's 503) until the processor catches up: backpressure the producer
sees, with nothing lost.

The `EventLog` protocol is what the processor is written against; `RedisStreamLog` is its one
implementation (another log, such as Kafka, would be a second module behind the same protocol).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from feature_pipelines.errors import EventLogError, inline
from feature_pipelines.stores.online.connection import connect, redacted
from feature_pipelines.streaming.events import EventBatch

DEFAULT_MAX_ENTRIES = 1_000_000  # per source; about 200 MB of Redis memory for the example's events
MAX_ENTRIES_ENV = "FEATURESTORE_STREAM_MAX_ENTRIES"


def stream_key(source: str) -> str:
    """The Redis key of a source's event log."""
    return f"fsevents:{source}"


def dead_letter_key(source: str) -> str:
    """The Redis key of a source's dead letters: entries the stream processor refused."""
    return f"fsdead:{source}"


def max_entries_from_env() -> int | None:
    """`FEATURESTORE_STREAM_MAX_ENTRIES`: how many entries a source's log may hold before pushes are
    refused (`0`: no limit); DEFAULT_MAX_ENTRIES when unset."""
    raw = os.environ.get(MAX_ENTRIES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ENTRIES
    if not raw.isdigit():
        raise EventLogError(f"{MAX_ENTRIES_ENV} is {raw!r}; set it to a whole number of entries per source "
                            f"(0 for no limit), e.g. {DEFAULT_MAX_ENTRIES}.")
    return int(raw) or None


@dataclass(frozen=True)
class LogEntry:
    """One event as the log holds it: its entry id (`<milliseconds>-<sequence>`, Redis's clock at
    the append) and the event's JSON object."""

    id: str
    event: Any  # the event's JSON object; from another producer, whatever it wrote (None: no `event` field)

    @property
    def appended_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


@dataclass(frozen=True)
class Lag:
    """How far a consumer group is behind a source's log."""

    entries: int  # appended, not yet acknowledged by the group (never delivered, or delivered and pending)
    pending: int  # of those, delivered to a consumer but not acknowledged
    seconds: float  # age of the oldest of them by Redis's clock; 0 when there is none


class EventLog(Protocol):
    """A durable, ordered log of events per source, consumed in groups with acknowledgements."""

    def append(self, batch: EventBatch) -> list[str]:
        """Append every event of `batch`, all or none; their entry ids, in order."""

    def read(self, source: str, group: str, consumer: str, count: int = 1000,
             block_ms: int | None = None, *, own_pending: bool = False) -> list[LogEntry]:
        """Up to `count` entries never delivered to `group`, now pending for `consumer`; with
        `own_pending`, those already delivered to `consumer` and not acknowledged (after a restart)."""

    def ack(self, source: str, group: str, entry_ids: Sequence[str]) -> int:
        """Mark entries applied; how many were pending."""

    def claim(self, source: str, group: str, consumer: str, min_idle_ms: int, count: int = 1000) -> list[LogEntry]:
        """Entries of `group` pending longer than `min_idle_ms` (their consumer died), now `consumer`'s."""

    def lag(self, source: str, group: str) -> Lag:
        """What `group` has not acknowledged yet, in entries and seconds."""

    def trim(self, source: str, before: str) -> int:
        """Drop entries with ids below `before`; how many were dropped."""

    def trim_acknowledged(self, source: str) -> int:
        """Drop the entries every group has acknowledged; how many were dropped."""

    def dead_letter(self, source: str, group: str, refused: Sequence[tuple[LogEntry, str]]) -> None:
        """Keep refused entries (each with why) in the source's dead letters."""


class RedisStreamLog:
    """The event log in Redis Streams (see the module docstring)."""

    def __init__(self, client: redis.Redis, url: str = "", max_entries: int | None = DEFAULT_MAX_ENTRIES):
        self._client = client
        self._url = url
        self.max_entries = max_entries
        self._groups: set[tuple[str, str]] = set()  # groups known to exist

    @classmethod
    def from_url(cls, url: str, socket_timeout: float | None = None, retries: int | None = None,
                 max_entries: int | None = DEFAULT_MAX_ENTRIES) -> "RedisStreamLog":
        return cls(connect(url, socket_timeout=socket_timeout, retries=retries), url, max_entries)

    @property
    def client(self) -> redis.Redis:
        return self._client

    # --- producing ------------------------------------------------------------------------------

    def append(self, batch: EventBatch) -> list[str]:
        if not len(batch):
            return []
        name = batch.source.name
        key = stream_key(name)
        try:
            if self.max_entries is not None:
                # Checked before the transaction, so pushes racing each other may pass the limit by
                # one push each; what matters is that a log that keeps growing stops growing.
                held = int(self._client.xlen(key))
                if held + len(batch) > self.max_entries:
                    raise EventLogError(
                        f"the event log of source {name!r} holds {held} entries, and {len(batch)} more would pass its "
                        f"limit of {self.max_entries}: the stream processor is behind or not running. Nothing of this "
                        f"push was stored; push again once it has caught up (the limit: {MAX_ENTRIES_ENV}).")
            pipeline = self._client.pipeline(transaction=True)  # MULTI/EXEC: every event or none
            for payload in batch.encoded():
                pipeline.xadd(key, {"event": payload})
            ids = pipeline.execute()
        except redis.RedisError as exc:
            raise EventLogError(
                f"appending {len(batch)} event(s) to the event log of source {name!r} in Redis "
                f"{redacted(self._url)} failed: {inline(exc)}. Nothing of this push was stored; push again once Redis "
                "is reachable (REDIS_URL).") from exc
        return [_text(i) for i in ids]

    # --- consuming ------------------------------------------------------------------------------

    def read(self, source: str, group: str, consumer: str, count: int = 1000,
             block_ms: int | None = None, *, own_pending: bool = False) -> list[LogEntry]:
        key = stream_key(source)
        self._ensure_group(key, group)
        if own_pending:
            try:
                reply = self._client.xreadgroup(group, consumer, {key: "0"}, count=count)
            except redis.RedisError as exc:
                raise self._error("reading", source, exc) from exc
            raw = [entry for _, entries in reply or [] for entry in entries]
            gone = [_text(entry[0]) for entry in raw if not entry[1]]
            if gone:  # trimmed while pending: nothing to apply, and Redis keeps them pending until acknowledged
                self.ack(source, group, gone)
            return _entries([entry for entry in raw if entry[1]])
        try:
            reply = self._client.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise self._error("reading", source, exc) from exc
            # The stream was deleted (and its group with it) since we created the group: again.
            self._groups.discard((key, group))
            self._ensure_group(key, group)
            reply = self._client.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms)
        except redis.RedisError as exc:
            raise self._error("reading", source, exc) from exc
        return [entry for _, entries in reply or [] for entry in _entries(entries)]

    def ack(self, source: str, group: str, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        try:
            return int(self._client.xack(stream_key(source), group, *entry_ids))
        except redis.RedisError as exc:
            raise self._error("acknowledging entries of", source, exc) from exc

    def claim(self, source: str, group: str, consumer: str, min_idle_ms: int, count: int = 1000) -> list[LogEntry]:
        key = stream_key(source)
        self._ensure_group(key, group)
        claimed: list[LogEntry] = []
        start = "0-0"
        try:
            while len(claimed) < count:
                reply = self._client.xautoclaim(key, group, consumer, min_idle_ms, start_id=start,
                                                count=count - len(claimed))
                start, entries = _text(reply[0]), reply[1]
                # Entries trimmed while pending come back without fields (and Redis drops them from the PEL).
                claimed += _entries([entry for entry in entries if entry and entry[1]])
                if start == "0-0":
                    break
        except redis.RedisError as exc:
            raise self._error("claiming entries of", source, exc) from exc
        return claimed

    def lag(self, source: str, group: str) -> Lag:
        key = stream_key(source)
        try:
            seconds, micros = self._client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            if not self._client.exists(key):
                return Lag(0, 0, 0.0)
            found = next((g for g in self._client.xinfo_groups(key) if _text(g["name"]) == group), None)
            if found is None:  # the group has read nothing yet: everything is behind
                first = self._client.xrange(key, count=1)
                entries = int(self._client.xlen(key))
                return Lag(entries, 0, _age(now_ms, first[0][0]) if first else 0.0)
            pending = int(found["pending"])
            last = _text(found["last-delivered-id"])
            undelivered = found.get("lag")
            if undelivered is None:  # Redis cannot tell after deletions inside the range: count
                undelivered = self._count_after(key, last)
            oldest = None
            if pending:
                oldest = self._client.xpending(key, group)["min"]
            elif undelivered:
                after = self._client.xrange(key, min=f"({last}", count=1)
                oldest = after[0][0] if after else None
        except redis.RedisError as exc:
            raise self._error("measuring the lag of", source, exc) from exc
        return Lag(pending + int(undelivered), pending, _age(now_ms, oldest) if oldest is not None else 0.0)

    def trim(self, source: str, before: str) -> int:
        try:
            return int(self._client.xtrim(stream_key(source), minid=before, approximate=False))
        except redis.RedisError as exc:
            raise self._error("trimming", source, exc) from exc

    def trim_acknowledged(self, source: str) -> int:
        key = stream_key(source)
        try:
            if not self._client.exists(key):
                return 0
            floor = None
            for group in self._client.xinfo_groups(key):
                # A group needs its oldest pending entry, or else everything after its last delivered one.
                first = _id(group["last-delivered-id"])
                first = (first[0], first[1] + 1)
                if int(group["pending"]):  # (acknowledged since, when XPENDING finds none)
                    oldest = self._client.xpending(key, _text(group["name"]))["min"]
                    first = first if oldest is None else min(first, _id(oldest))
                floor = first if floor is None else min(floor, first)
            if floor is None:  # no group has read yet: nothing is acknowledged
                return 0
            return int(self._client.xtrim(key, minid=f"{floor[0]}-{floor[1]}", approximate=False))
        except redis.RedisError as exc:
            raise self._error("trimming", source, exc) from exc

    def dead_letter(self, source: str, group: str, refused: Sequence[tuple[LogEntry, str]]) -> None:
        if not refused:
            return
        try:
            pipeline = self._client.pipeline(transaction=True)
            for entry, reason in refused:
                raw = entry.event if isinstance(entry.event, str) else json.dumps(entry.event)
                pipeline.xadd(dead_letter_key(source), {"entry": entry.id, "group": group, "reason": reason,
                                                        "event": "" if entry.event is None else raw})
            pipeline.execute()
        except redis.RedisError as exc:
            raise self._error("keeping dead letters of", source, exc) from exc

    # --- parts ----------------------------------------------------------------------------------

    def _ensure_group(self, key: str, group: str) -> None:
        """Create `group` at the log's start (events pushed before the processor first ran count)."""
        source = key.split(":", 1)[1]
        if (key, group) in self._groups:
            return
        try:
            self._client.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise self._error("creating a consumer group on", source, exc) from exc
        except redis.RedisError as exc:
            raise self._error("creating a consumer group on", source, exc) from exc
        self._groups.add((key, group))

    def _count_after(self, key: str, last: str, page: int = 10_000) -> int:
        counted, start = 0, f"({last}"
        while True:
            entries = self._client.xrange(key, min=start, count=page)
            counted += len(entries)
            if len(entries) < page:
                return counted
            start = f"({_text(entries[-1][0])}"

    def _error(self, doing: str, source: str, exc: Exception) -> EventLogError:
        return EventLogError(f"{doing} the event log of source {source!r} in Redis {redacted(self._url)} failed: "
                             f"{inline(exc)}. Check that Redis is up (REDIS_URL).")


def _entries(raw: Sequence[Any]) -> list[LogEntry]:
    return [LogEntry(_text(entry_id), _event(fields)) for entry_id, fields in raw]


def _event(fields: dict) -> Any:
    """The `event` field parsed; what another producer wrote as is when it is not JSON (the
    processor refuses it then, into the dead letters), None when there is no such field."""
    value = fields.get(b"event", fields.get("event"))
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return _text(value) if not isinstance(value, bytes) else value.decode(errors="replace")


def _id(entry_id: Any) -> tuple[int, int]:
    millis, _, sequence = _text(entry_id).partition("-")
    return int(millis), int(sequence or 0)


def _age(now_ms: int, entry_id: Any) -> float:
    return max(0, now_ms - int(_text(entry_id).split("-", 1)[0])) / 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
