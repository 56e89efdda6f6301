"""The feature server's metrics, in Prometheus' text format (`GET /metrics`).

Kept per process and updated only on the event loop's thread, so no locks. With `--workers N`
each worker counts its own requests; scrape replicas of one worker each to see them all.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

# Seconds; the interesting part is below 10 ms.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PREFIX = "featurestore_serve"


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status)
        self.latency: dict[str, Histogram] = {}
        self.statuses: Counter[tuple[str, str]] = Counter()  # (feature set, present/not_found/expired)
        self.events_pushed: Counter[str] = Counter()  # source -> events appended to its log
        self.pushes_refused: Counter[tuple[str, str]] = Counter()  # (source, invalid/unavailable)
        self.entities = 0
        self.redis_errors = 0
        self.request_feature_errors = 0
        self.in_flight = 0

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        histogram = self.latency.get(endpoint)
        if histogram is None:
            histogram = self.latency[endpoint] = Histogram()
        histogram.observe(seconds)

    def render(self) -> str:
        lines = _family("requests_total", "counter", "HTTP requests answered, by endpoint and status.")
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(_sample("requests_total", count, endpoint=endpoint, status=status))
        lines += _family("request_duration_seconds", "histogram",
                         "Time from a request's arrival to its response, by endpoint.")
        for endpoint, histogram in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip([*map(_number, BUCKETS), "+Inf"], histogram.counts):
                cumulative += count
                lines.append(_sample("request_duration_seconds_bucket", cumulative, endpoint=endpoint, le=bound))
            lines.append(_sample("request_duration_seconds_sum", f"{histogram.total:.9f}", endpoint=endpoint))
            lines.append(_sample("request_duration_seconds_count", cumulative, endpoint=endpoint))
        lines += _family("values_total", "counter", "Feature set values looked up, by feature set and status.")
        for (feature_set, status), count in sorted(self.statuses.items()):
            lines.append(_sample("values_total", count, feature_set=feature_set, status=status))
        lines += _family("events_pushed_total", "counter", "Events appended to the event log by POST /push, by source.")
        for source, count in sorted(self.events_pushed.items()):
            lines.append(_sample("events_pushed_total", count, source=source))
        lines += _family("pushes_refused_total", "counter", "Pushes refused, by source and reason: invalid (a bad event, "
                         "422) or unavailable (Redis down or the log full, 503).")
        for (source, reason), count in sorted(self.pushes_refused.items()):
            lines.append(_sample("pushes_refused_total", count, source=source, reason=reason))
        for name, kind, help_text, value in (
            ("entities_total", "counter", "Entities looked up.", self.entities),
            ("redis_errors_total", "counter", "Requests that failed because Redis could not be read.",
             self.redis_errors),
            ("request_feature_errors_total", "counter", "Requests that failed because a request feature's function "
             "raised or returned the wrong type.", self.request_feature_errors),
            ("requests_in_flight", "gauge", "Requests being answered now.", self.in_flight),
        ):
            lines += [*_family(name, kind, help_text), _sample(name, value)]
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    """A metric family's HELP and TYPE lines."""
    return [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} {kind}"]


def _sample(name: str, value: object, **labels: object) -> str:
    """One sample line, with its labels in the order given."""
    label_text = ",".join(f'{key}="{label}"' for key, label in labels.items())
    return f"{PREFIX}_{name}{{{label_text}}} {value}" if labels else f"{PREFIX}_{name} {value}"


def _number(bound: float) -> str:
    return f"{bound:g}"
