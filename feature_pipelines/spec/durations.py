"""Parse the short duration strings used in specs: `30m`, `6h`, `7d`, `2w`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from feature_pipelines.errors import SpecError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(value: str | timedelta | int, *, field: str) -> timedelta:
    """Return `value` as a timedelta; `field` names the spec field in errors."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise SpecError(f"{field}: duration {value} is negative; use a positive duration such as '7d'.")
        return value
    if isinstance(value, int) and value == 0:
        return timedelta(0)
    if isinstance(value, str):
        if value.strip() == "0":
            return timedelta(0)
        match = _PATTERN.match(value)
        if match:
            return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    raise SpecError(
        f"{field}: cannot read duration {value!r}; write a number and a unit, "
        "for example '30m', '6h', '7d' or '2w' (or '0')."
    )


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the largest exact unit, the inverse of `parse_duration`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def as_written(value: str | timedelta | int) -> str:
    """A duration the way the user wrote it, for messages ('7d' stays '7d', never '1w'); a
    timedelta given in Python is shown in its largest exact unit."""
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value).strip()


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(delta: timedelta) -> int:
    """A duration in whole microseconds, exactly (no float rounding)."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_micros(moment: datetime) -> int:
    """A UTC-aware time as microseconds since the epoch."""
    return micros(moment - EPOCH)
