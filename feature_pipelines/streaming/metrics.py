"""The stream processor's counters and lag, where a later reader (a Dagster sensor, an operator)
finds them cheaply: a Redis hash per consumer group, `fsstream:metrics:<group>`, and a JSON line on
stderr every `interval_s` seconds.

Hash fields: `<set key>:applied`, `<set key>:late` (events, summed over the group's processes),
`<set key>:retried` (entity writes redone because another process wrote the entity meanwhile),
`<source>:refused` (entries sent to the dead letters), `<source>:appended` (events new to the
Delta source), `<source>:lag_entries`,
`<source>:lag_seconds` and `<source>:lag_at` (the last measurement, ISO time). Counters count
deliveries: a micro-batch applied again after a crash counts again (its values do not change).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import TextIO

import redis

from feature_pipelines.clock import utc_now
from feature_pipelines.streaming.log import Lag


def metrics_key(group: str) -> str:
    return f"fsstream:metrics:{group}"


class StreamMetrics:
    """Counts of this process, added to the group's hash after every micro-batch."""

    def __init__(self, client: redis.Redis, group: str, interval_s: float = 10.0, out: TextIO | None = None):
        self._client = client
        self._key = metrics_key(group)
        self._interval_s = interval_s
        self._out = out or sys.stderr
        self._last_line = time.monotonic()
        self.totals: Counter[str] = Counter()
        self.lags: dict[str, Lag] = {}

    def add(self, counts: dict[str, int]) -> None:
        """Add `counts` (field -> events) to the totals and the group's hash."""
        counts = {field: n for field, n in counts.items() if n}
        if not counts:
            return
        self.totals.update(counts)
        pipeline = self._client.pipeline(transaction=False)
        for field, n in counts.items():
            pipeline.hincrby(self._key, field, n)
        pipeline.execute()

    def lag(self, source: str, lag: Lag) -> None:
        self.lags[source] = lag
        self._client.hset(self._key, mapping={f"{source}:lag_entries": lag.entries,
                                              f"{source}:lag_seconds": lag.seconds,
                                              f"{source}:lag_at": utc_now().isoformat(timespec="seconds")})

    def maybe_log(self, force: bool = False) -> None:
        """The JSON line of this process's totals and the lags, at most every `interval_s`."""
        now = time.monotonic()
        if not force and now - self._last_line < self._interval_s:
            return
        self._last_line = now
        line = {"stream_processor": dict(sorted(self.totals.items())),
                "lag": {s: {"entries": lag.entries, "seconds": lag.seconds} for s, lag in sorted(self.lags.items())}}
        print(json.dumps(line), file=self._out, flush=True)
