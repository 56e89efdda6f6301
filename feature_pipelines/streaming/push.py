"""A push: resolve the source, validate the events, append them to the event log. The one path
behind `FeatureStore.push` and the feature server's `POST /push/{source}`."""

from __future__ import annotations

from typing import Any

from feature_pipelines.streaming.events import validate_events
from feature_pipelines.streaming.log import EventLog
from feature_pipelines.streaming.sources import PushSources


class Pusher:
    """Pushes events of the catalog's streamed sources to one event log."""

    def __init__(self, sources: PushSources, log: EventLog):
        self.sources = sources
        self.log = log

    def push(self, source_name: str, events: Any) -> int:
        """How many events were appended: all of `events`, or none (an error says why)."""
        pushed = self.sources.get(source_name)
        batch = validate_events(pushed.source, events, pushed.keys)
        self.log.append(batch)
        return len(batch)
