"""The stream processor (`featurestore stream`): consumes the event log of every streamed source
in a consumer group, and per micro-batch

1. validates each entry like a push; a bad entry (another producer's) is refused: logged with its
   entry id, kept in the source's dead letters (`fsdead:<source>`) and acknowledged;
2. applies the events to the online values of each streamed feature set of the source
   (`apply.py`; late events excepted);
3. appends them to the source's Delta table, in one commit, once by event id;
4. only then acknowledges the entries, and trims what every group has acknowledged.

A crash between any two steps leaves the entries unacknowledged; they are delivered again (to
this consumer on restart, or claimed by another after `claim_idle_ms`) and applied again, which
changes nothing: the online state is a union by event id and the Delta append skips ids it holds.
Processes of one group split the entries between them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from feature_pipelines.clock import utc_now
from feature_pipelines.errors import EventError, FeatureStoreError
from feature_pipelines.faults import STREAM_AFTER_APPEND, STREAM_AFTER_ONLINE, fault_point
from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.spec.durations import epoch_micros
from feature_pipelines.stores.offline.source_append import append_events
from feature_pipelines.stores.offline.source_history import recent_events
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.streaming.apply import apply_events
from feature_pipelines.streaming.events import EventBatch, validate_events
from feature_pipelines.streaming.log import EventLog, LogEntry
from feature_pipelines.streaming.metrics import StreamMetrics
from feature_pipelines.streaming.sources import PushSource, PushSources

log = logging.getLogger("featurestore.stream")

DEFAULT_GROUP = "featurestore"


def default_consumer() -> str:
    """This process's name in its group: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class StreamConfig:
    group: str = DEFAULT_GROUP
    consumer: str = ""  # default_consumer() when empty
    batch_size: int = 1000  # entries per micro-batch and source
    poll_ms: int = 200  # how long an idle read waits for new entries
    claim_idle_ms: int = 30_000  # entries pending this long belong to a dead consumer: claimed
    lateness_us: int = 3_600_000_000  # 1h: events older than now minus this go to the Delta source only
    lag_every_s: float = 1.0  # how often the lag is measured


class StreamProcessor:
    """Consumes the streamed sources of a catalog from an event log (see the module docstring)."""

    def __init__(self, catalog: Catalog, events: EventLog, online: RedisOnlineStore, source_root: str,
                 source_options: dict[str, str] | None, config: StreamConfig, metrics: StreamMetrics,
                 sources: Sequence[str] = ()):
        pushed = PushSources(catalog)
        self.sources = [pushed.get(name) for name in (sources or pushed.names())]
        for source in self.sources:
            if source.source.format != "delta":
                raise FeatureStoreError(f"source {source.source.name!r} is a {source.source.format} folder; streamed "
                                        "events are appended to a Delta table, so make it a Delta source.")
        self.events = events
        self.online = online
        self.source_root = source_root
        self.source_options = source_options
        self.config = config
        self.consumer = config.consumer or default_consumer()
        self.metrics = metrics
        self._lag_measured = 0.0

    def run(self, stop: threading.Event) -> None:
        """Process micro-batches until `stop` is set; the one in hand is finished first."""
        for source in self.sources:  # what this consumer read before a restart and never acknowledged
            while not stop.is_set() and self.step(source, own_pending=True):
                pass
        idle = False
        claimed = time.monotonic()
        while not stop.is_set():
            busy = False
            for source in self.sources:
                block = max(1, self.config.poll_ms // len(self.sources)) if idle else None
                busy |= bool(self.step(source, block_ms=block))
                if stop.is_set():
                    break
            # Entries of dead consumers: looked for when idle, and at least every half claim period.
            if not stop.is_set() and (not busy or time.monotonic() - claimed > self.config.claim_idle_ms / 2000):
                claimed = time.monotonic()
                busy |= any([self.step(source, claim=True) for source in self.sources])
            idle = not busy
            self._measure_lag()
        self.metrics.maybe_log(force=True)

    def step(self, source: PushSource, block_ms: int | None = None, own_pending: bool = False,
             claim: bool = False) -> int:
        """Read one micro-batch of `source` and process it; how many entries it held."""
        name, group = source.source.name, self.config.group
        if claim:
            entries = self.events.claim(name, group, self.consumer, self.config.claim_idle_ms, self.config.batch_size)
        else:
            entries = self.events.read(name, group, self.consumer, self.config.batch_size, block_ms,
                                       own_pending=own_pending)
        if entries:
            self.process(source, entries)
        return len(entries)

    def process(self, source: PushSource, entries: Sequence[LogEntry]) -> None:
        """Validate, apply online, append to Delta, then acknowledge and trim (in this order)."""
        name = source.source.name
        batch, refused = _validated(source, entries)
        counts: dict[str, int] = {}
        if refused:
            for entry, reason in refused:
                log.warning("refused entry %s of source %r: %s", entry.id, name, reason)
            self.events.dead_letter(name, self.config.group, refused)
            counts[f"{name}:refused"] = len(refused)
        if batch is not None and len(batch):
            now_us = epoch_micros(utc_now())
            for feature_set in source.feature_sets:
                history = partial(recent_events, source.source, self.source_root, feature_set.entity_names,
                                  storage_options=self.source_options)
                applied = apply_events(self.online, feature_set, batch.events, batch.event_time_micros, now_us,
                                       self.config.lateness_us, history)
                counts[f"{feature_set.key}:applied"] = applied.applied
                counts[f"{feature_set.key}:late"] = applied.late
                counts[f"{feature_set.key}:retried"] = applied.retried
            fault_point(STREAM_AFTER_ONLINE)
            counts[f"{name}:appended"] = append_events(source.source, self.source_root, batch.events,
                                                       self.source_options)
        fault_point(STREAM_AFTER_APPEND)
        self.events.ack(name, self.config.group, [entry.id for entry in entries])
        self.events.trim_acknowledged(name)
        self.metrics.add(counts)

    def _measure_lag(self) -> None:
        now = time.monotonic()
        if self._lag_measured and now - self._lag_measured < self.config.lag_every_s:
            return
        self._lag_measured = now
        for source in self.sources:
            self.metrics.lag(source.source.name, self.events.lag(source.source.name, self.config.group))
        self.metrics.maybe_log()


def _validated(source: PushSource, entries: Sequence[LogEntry]) -> tuple[EventBatch | None,
                                                                             list[tuple[LogEntry, str]]]:
    """The valid events of `entries`, and the refused entries with why. The whole micro-batch is
    checked at once; only when it holds a bad entry is each checked on its own."""
    try:
        return validate_events(source.source, [entry.event for entry in entries], source.keys), []
    except EventError:
        pass
    good, refused = [], []
    for entry in entries:
        try:
            validate_events(source.source, [entry.event], source.keys)
            good.append(entry.event)
        except EventError as exc:
            refused.append((entry, str(exc).replace("events[0]", "event")))
    return (validate_events(source.source, good, source.keys) if good else None), refused
