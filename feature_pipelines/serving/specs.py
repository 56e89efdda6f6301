"""What the feature server serves: the retrieval specs of `feature_defs/retrieval_specs/`,
resolved against the catalog once at start, and ad-hoc feature lists resolved on first use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from feature_pipelines.serving.requests import KeyColumn
from feature_pipelines.spec.catalog import Catalog, load_catalog
from feature_pipelines.spec.request_features import NO_REQUEST_FEATURES, RequestFeatures
from feature_pipelines.spec.retrieval_spec import FeatureSelection, RetrievalSpec, load_retrieval_specs

# Distinct ad-hoc feature lists kept resolved; clients sending ever new lists cannot grow memory.
_ADHOC_CACHE = 256


@dataclass(frozen=True)
class Served:
    """What one request reads: the selections, the key columns and request fields it gives, the
    output columns (the fetched features, then the request features)."""

    name: str | None  # the retrieval spec; None for an ad-hoc feature list
    selections: tuple[FeatureSelection, ...]
    keys: tuple[KeyColumn, ...]
    columns: tuple[str, ...]
    fields: tuple[KeyColumn, ...] = ()  # the request fields its request features read
    request: RequestFeatures = NO_REQUEST_FEATURES

    @classmethod
    def of(cls, name: str | None, selections: Sequence[FeatureSelection],
           request: RequestFeatures = NO_REQUEST_FEATURES) -> "Served":
        keys: dict[str, KeyColumn] = {}
        for selection in selections:
            for entity in selection.feature_set.entities:
                keys.setdefault(entity.name, KeyColumn(entity.name, entity.dtype))
        columns = tuple(c for s in selections for c in s.columns) + request.columns
        fields = tuple(KeyColumn(name, dtype) for name, dtype in request.fields.items())
        return cls(name, tuple(selections), tuple(keys.values()), columns, fields, request)


class ServedCatalog:
    """The catalog and the retrieval specs, as the server answers them."""

    def __init__(self, catalog: Catalog, specs: Sequence[RetrievalSpec]):
        self.catalog = catalog
        self.specs = {spec.name: _served(spec, catalog) for spec in specs}
        self.adhoc = lru_cache(maxsize=_ADHOC_CACHE)(self._adhoc)

    @classmethod
    def load(cls, feature_defs_dir: Path) -> "ServedCatalog":
        """The feature sets of `feature_defs_dir` and the specs of its `retrieval_specs/`."""
        return cls(load_catalog(feature_defs_dir), load_retrieval_specs(feature_defs_dir / "retrieval_specs"))

    def _adhoc(self, refs: tuple[str, ...], full_names: bool) -> Served:
        """An ad-hoc list of `feature_set:version:feature` entries (RetrievalError when one is unknown)."""
        return Served.of(None, RetrievalSpec.of(refs, name="request", full_names=full_names).resolve(self.catalog))


def _served(spec: RetrievalSpec, catalog: Catalog) -> Served:
    selections = spec.resolve(catalog)
    return Served.of(spec.name, selections, spec.bind_request_features(catalog, selections))
