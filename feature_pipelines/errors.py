"""One exception family for every error a user can cause.

Each message says what was wrong, where, and how to fix it, so the CLI can print it
without a traceback.
"""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base class of every error a user can cause."""


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


class QualityCheckError(FeatureStoreError):
    """A blocking quality check failed: the windows are offline but not published online."""


class RunCanceledError(FeatureStoreError):
    """A run was canceled before it wrote anything: by a signal, its wait timeout or from the UI.
    `exit_code` is what the CLI exits with (128 + the signal number for a signal)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
