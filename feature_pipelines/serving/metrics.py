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
        self.entities = 0
        self.redis_errors = 0
        self.in_flight = 0

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        histogram = self.latency.get(endpoint)
        if histogram is None:
            histogram = self.latency[endpoint] = Histogram()
        histogram.observe(seconds)

    def render(self) -> str:
        lines = [
            f"# HELP {PREFIX}_requests_total HTTP requests answered, by endpoint and status.",
            f"# TYPE {PREFIX}_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'{PREFIX}_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += [
            f"# HELP {PREFIX}_request_duration_seconds Time from a request's arrival to its response, by endpoint.",
            f"# TYPE {PREFIX}_request_duration_seconds histogram",
        ]
        for endpoint, histogram in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip([*map(_number, BUCKETS), "+Inf"], histogram.counts):
                cumulative += count
                lines.append(f'{PREFIX}_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} {cumulative}')
            lines.append(f'{PREFIX}_request_duration_seconds_sum{{endpoint="{endpoint}"}} {histogram.total:.9f}')
            lines.append(f'{PREFIX}_request_duration_seconds_count{{endpoint="{endpoint}"}} {cumulative}')
        lines += [
            f"# HELP {PREFIX}_values_total Feature set values looked up, by feature set and status.",
            f"# TYPE {PREFIX}_values_total counter",
        ]
        for (feature_set, status), count in sorted(self.statuses.items()):
            lines.append(f'{PREFIX}_values_total{{feature_set="{feature_set}",status="{status}"}} {count}')
        lines += [
            f"# HELP {PREFIX}_entities_total Entities looked up.",
            f"# TYPE {PREFIX}_entities_total counter",
            f"{PREFIX}_entities_total {self.entities}",
            f"# HELP {PREFIX}_redis_errors_total Requests that failed because Redis could not be read.",
            f"# TYPE {PREFIX}_redis_errors_total counter",
            f"{PREFIX}_redis_errors_total {self.redis_errors}",
            f"# HELP {PREFIX}_requests_in_flight Requests being answered now.",
            f"# TYPE {PREFIX}_requests_in_flight gauge",
            f"{PREFIX}_requests_in_flight {self.in_flight}",
        ]
        return "\n".join(lines) + "\n"


def _number(bound: float) -> str:
    return f"{bound:g}"
