"""The current time and times given by users, always in UTC-aware datetimes.

Neutral ground for every layer: the CLI, the sensors and the dataset assets read times the same way.
"""

from __future__ import annotations

from datetime import datetime, timezone

from feature_pipelines.errors import RetrievalError


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str, what: str = "as_of") -> datetime:
    """An ISO 8601 time that must carry a time zone."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RetrievalError(f"{what} {value!r} is not an ISO 8601 time; write it like 2024-02-01T00:00:00+00:00.") from exc
    if moment.tzinfo is None:
        raise RetrievalError(f"{what} {value!r} has no time zone; add one, e.g. 2024-02-01T00:00:00+00:00.")
    return moment
