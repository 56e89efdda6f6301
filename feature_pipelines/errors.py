"""One exception family for every error a user can cause.

Each message says what was wrong, where, and how to fix it, so the CLI can print it
without a traceback.
"""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base class of every error a user can cause. The message ends with exactly one period,
    however the raise site (or a wrapper adding context) wrote it."""

    def __init__(self, message: str = "", *args: object):
        super().__init__(one_sentence_end(message), *args)


def one_sentence_end(message: str) -> str:
    """`message` ending with exactly one period (`x`, `x.` and `x..` all give `x.`)."""
    text = str(message).rstrip()
    return f"{text.rstrip('.')}." if text else text


def inline(exc: BaseException) -> str:
    """Another library's error, to quote inside one of ours: its first line (Spark's run on
    with plans and stack traces), without a final period."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return first.rstrip(".")


def user_error(exc: BaseException) -> FeatureStoreError | None:
    """The FeatureStoreError behind `exc`: itself, or one it was raised from or while handling
    (Dagster wraps what an asset raises in its own errors). None when there is none: then `exc`
    is not an error of the user's input."""
    current: BaseException | None = exc
    visited: set[int] = set()
    while current is not None and id(current) not in visited:  # chains can loop
        if isinstance(current, FeatureStoreError):
            return current
        visited.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class SpecError(FeatureStoreError):
    """A feature set definition in `feature_defs/` is invalid."""


class VersionConflictError(SpecError):
    """A materialized feature set version's definition was changed instead of versioned."""


class CatalogError(FeatureStoreError):
    """The set of feature definitions is inconsistent (duplicates, unknown names)."""


class SourceError(FeatureStoreError):
    """A source table is missing or does not match its declared schema."""


class TransformOutputError(FeatureStoreError):
    """A transform produced rows that break the contract (nulls, duplicates, out-of-window)."""


class WindowError(FeatureStoreError):
    """A window key or range is invalid for a feature set."""


class OfflineStoreError(FeatureStoreError):
    """The offline (Delta) store could not be read or written."""


class OnlineStoreError(FeatureStoreError):
    """The online (Redis) store could not be reached or written."""


class RetrievalError(FeatureStoreError):
    """A retrieval request is invalid: bad observations, unknown features, missing windows."""


class RequestFieldError(RetrievalError):
    """A request field a request-time feature reads holds a value of another type than declared.
    `field`, `row`, `value` and `expected` let each caller say where (an observation row, an entity
    of a server request)."""

    def __init__(self, field: str, row: int, value: object, expected: str):
        super().__init__(f"request field {field!r} must be {expected}, not {value!r} (row {row}); convert the values")
        self.field, self.row, self.value, self.expected = field, row, value, expected


class RequestFeatureError(FeatureStoreError):
    """A request-time feature's function raised, or returned a value of another type than it
    declares: a bug in its definition, not in the request."""


class EventError(FeatureStoreError):
    """A pushed event breaks its source's declared schema. `row` and `column` say where (the server
    answers `events[row].column`); nothing of the batch it came in was applied."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None):
        super().__init__(message)
        self.row, self.column = row, column

    @property
    def field(self) -> str:
        """Where, as a request field: `events[3].amount`, `events[3]` or `events`."""
        return "events" + (f"[{self.row}]" if self.row is not None else "") + (f".{self.column}" if self.column else "")


class EventLogError(FeatureStoreError):
    """The event log (Redis Streams) could not take or give events: Redis is down, or the log of a
    source is full because the stream processor is behind. Nothing of the push was stored."""


class QualityCheckError(FeatureStoreError):
    """A blocking quality check failed: the windows it failed on are quarantined (offline, never
    published online, refused by retrieval unless accepted)."""


class ServeConfigError(FeatureStoreError):
    """The feature server cannot start as configured: bad tokens, or an open bind without them."""


class RunCanceledError(FeatureStoreError):
    """A run was canceled before it wrote anything: by a signal, its wait timeout or from the UI.
    `exit_code` is what the CLI exits with (128 + the signal number for a signal)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
