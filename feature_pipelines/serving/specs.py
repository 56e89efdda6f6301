"""What the feature server serves: the retrieval specs of `feature_defs/retrieval_specs/`,
resolved against the catalog once at start, and ad-hoc feature lists resolved on first use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from feature_pipelines.serving.requests import KeyColumn
from feature_pipelines.spec.catalog import Catalog, load_catalog
from feature_pipelines.spec.retrieval_spec import FeatureSelection, RetrievalSpec, load_retrieval_specs

# Distinct ad-hoc feature lists kept resolved; clients sending ever new lists cannot grow memory.
_ADHOC_CACHE = 256


@dataclass(frozen=True)
class Served:
    """What one request reads: the selections, the key columns it gives, the output columns."""

    name: str | None  # the retrieval spec; None for an ad-hoc feature list
    selections: tuple[FeatureSelection, ...]
    keys: tuple[KeyColumn, ...]
    columns: tuple[str, ...]

    @classmethod
    def of(cls, name: str | None, selections: Sequence[FeatureSelection]) -> "Served":
        keys: dict[str, KeyColumn] = {}
        for selection in selections:
            for entity in selection.feature_set.entities:
                keys.setdefault(entity.name, KeyColumn(entity.name, entity.dtype))
        columns = tuple(c for s in selections for c in s.columns)
        return cls(name, tuple(selections), tuple(keys.values()), columns)


class ServedCatalog:
    """The catalog and the retrieval specs, as the server answers them."""

    def __init__(self, catalog: Catalog, specs: Sequence[RetrievalSpec]):
        self.catalog = catalog
        self.specs = {spec.name: Served.of(spec.name, spec.resolve(catalog)) for spec in specs}
        self.adhoc = lru_cache(maxsize=_ADHOC_CACHE)(self._adhoc)

    @classmethod
    def load(cls, feature_defs_dir: Path) -> "ServedCatalog":
        """The feature sets of `feature_defs_dir` and the specs of its `retrieval_specs/`."""
        return cls(load_catalog(feature_defs_dir), load_retrieval_specs(feature_defs_dir / "retrieval_specs"))

    def _adhoc(self, refs: tuple[str, ...], full_names: bool) -> Served:
        """An ad-hoc list of `feature_set:version:feature` entries (RetrievalError when one is unknown)."""
        return Served.of(None, RetrievalSpec.of(refs, name="request", full_names=full_names).resolve(self.catalog))
