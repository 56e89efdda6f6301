"""Which sources take pushed events: those that a feature set with `Materialization(stream=True)`
reads. The Python API and the feature server both resolve a push's source name here."""

from __future__ import annotations

from dataclasses import dataclass

from feature_pipelines.errors import CatalogError, FeatureStoreError
from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.spec.feature_set import FeatureSet, Source


class UnknownSourceError(FeatureStoreError):
    """No feature set reads a source of that name (the server answers 404)."""


class NotStreamedError(FeatureStoreError):
    """The source exists, but no feature set that reads it streams (the server answers 409)."""


@dataclass(frozen=True)
class PushSource:
    """A source events can be pushed to, the feature sets that stream it and their entity keys."""

    source: Source
    feature_sets: tuple[FeatureSet, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """Entity key columns of the streamed sets: a pushed event must give each, non-null."""
        return tuple(dict.fromkeys(k for fs in self.feature_sets for k in fs.entity_names))


class PushSources:
    """The push sources of a catalog, by source name."""

    def __init__(self, catalog: Catalog):
        readers: dict[str, list[FeatureSet]] = {}
        for feature_set in catalog:
            readers.setdefault(feature_set.source.name, []).append(feature_set)
        self._readers = readers
        self._sources: dict[str, PushSource] = {}
        for name, feature_sets in readers.items():
            streamed = [fs for fs in feature_sets if fs.materialization.stream]
            if any(fs.source != streamed[0].source for fs in streamed):
                raise CatalogError(f"feature sets {sorted(fs.key for fs in streamed)} stream source {name!r} but "
                                   "declare it differently; declare the source once and use that object in each.")
            if streamed:
                self._sources[name] = PushSource(streamed[0].source, tuple(streamed))

    def names(self) -> list[str]:
        return sorted(self._sources)

    def get(self, name: str) -> PushSource:
        """The push source `name`; UnknownSourceError or NotStreamedError saying what to do."""
        found = self._sources.get(name)
        if found is not None:
            return found
        if name not in self._readers:
            raise UnknownSourceError(f"no feature set reads a source named {name!r}; the sources events can be pushed "
                                     f"to are {self.names() or 'none'} (Source(name=...) in feature_defs/)")
        readers = sorted(fs.key for fs in self._readers[name])
        raise NotStreamedError(f"source {name!r} takes no pushed events: no feature set that reads it streams; set "
                               f"materialization=Materialization(stream=True) on one of {readers} (its source also "
                               "needs event_id=...)")
