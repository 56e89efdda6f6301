"""Retrieval specs: the features a model uses, as `feature_set:version:feature` entries.

The same spec drives training retrieval, batch inference and online lookups. It is a YAML
file such as:

    name: fraud_model
    full_names: false          # true: columns are named feature_set__feature
    features:
      - transactions:1:amount_sum_7d
      - transactions:1:txn_count_7d
      - accounts:1:*           # every feature of accounts v1 (also written `accounts:1`)
    request_features:          # optional: request-time features (spec/request_features.py)
      - amount_to_mean_30d
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.errors import FeatureStoreError, RetrievalError
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.spec.request_features import RequestFeatures, bind_request_features

_ENTRY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\d+)\s*(?::\s*(\*|[A-Za-z_][A-Za-z0-9_]*)\s*)?$")


@dataclass(frozen=True)
class FeatureRef:
    """One entry: a feature of a feature set version, or all of them (`feature=None`)."""

    feature_set: str
    version: int
    feature: str | None = None

    @classmethod
    def parse(cls, entry: str) -> "FeatureRef":
        match = _ENTRY.match(str(entry))
        if not match:
            raise RetrievalError(
                f"retrieval spec entry {entry!r} is not of the form 'feature_set:version:feature' "
                "(or 'feature_set:version:*' for every feature), e.g. 'transactions:1:amount_sum_7d'."
            )
        feature = match.group(3)
        return cls(match.group(1), int(match.group(2)), None if feature in (None, "*") else feature)

    def __str__(self) -> str:
        return f"{self.feature_set}:{self.version}:{self.feature or '*'}"


@dataclass(frozen=True)
class FeatureSelection:
    """The features requested from one feature set version, and their output column names."""

    feature_set: FeatureSet
    features: tuple[str, ...]
    columns: tuple[str, ...]


@dataclass(frozen=True)
class RetrievalSpec:
    name: str
    features: tuple[FeatureRef, ...]
    full_names: bool = False
    request_features: tuple[str, ...] = ()  # names of request-time features, computed after the fetched ones
    # The YAML file it was read from, if any: errors name it, since that is what to edit.
    file: Path | None = field(default=None, compare=False)

    @classmethod
    def of(cls, entries: Iterable[str], name: str = "adhoc", full_names: bool = False,
           request_features: Iterable[str] = ()) -> "RetrievalSpec":
        refs = tuple(FeatureRef.parse(e) for e in entries)
        if not refs:
            raise RetrievalError(f"retrieval spec {name!r} lists no features; add entries like 'transactions:1:amount_sum_7d'.")
        names = tuple(request_features)
        if not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise RetrievalError(f"retrieval spec {name!r}: request_features must list the names of request features, "
                                 f"like [amount_to_mean_30d], not {list(names)}.")
        return cls(name, refs, full_names, names)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RetrievalSpec":
        file = Path(path)
        if not file.exists():
            raise RetrievalError(f"retrieval spec {file} does not exist.")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise RetrievalError(f"retrieval spec {file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            raise RetrievalError(f"retrieval spec {file}: expected a mapping with a 'features:' list.")
        unknown = set(data) - {"name", "features", "full_names", "request_features", "description"}
        if unknown:
            raise RetrievalError(f"retrieval spec {file}: unknown keys {sorted(unknown)}; use name, features, full_names, "
                                 "request_features.")
        request_features = data.get("request_features") or []
        if not isinstance(request_features, list):
            raise RetrievalError(f"retrieval spec {file}: request_features must be a list of names, like "
                                 "[amount_to_mean_30d].")
        try:
            spec = cls.of(data["features"], name=str(data.get("name", file.stem)), full_names=bool(data.get("full_names", False)),
                          request_features=request_features)
        except FeatureStoreError as exc:
            raise RetrievalError(f"retrieval spec {file}: {exc}") from exc
        return replace(spec, file=file)

    @property
    def _where(self) -> str:
        return f"retrieval spec {self.file}" if self.file else f"retrieval spec {self.name!r}"

    def resolve(self, catalog: Catalog, full_names: bool | None = None) -> list[FeatureSelection]:
        """Check every entry against the catalog; output names must not collide."""
        use_full = self.full_names if full_names is None else full_names
        chosen: dict[tuple[str, int], list[str]] = {}
        for ref in self.features:
            try:
                feature_set = catalog.get(ref.feature_set, ref.version)
            except FeatureStoreError as exc:
                # A spec in feature_defs/retrieval_specs/ loads with the definitions, so a feature
                # set removed from feature_defs/ stops the code location here: say which file to edit.
                fix = ("; edit or remove that entry, or delete the file if no model uses it (retrieval specs "
                       "load with the feature sets)" if self.file else "")
                raise RetrievalError(f"{self._where}, entry {ref}: {str(exc).rstrip('.')}{fix}.") from exc
            names = feature_set.feature_names if ref.feature is None else [ref.feature]
            for name in names:
                if name not in feature_set.feature_names:
                    raise RetrievalError(
                        f"{self._where}, entry {ref}: feature set {feature_set.key} has no feature "
                        f"{name!r}; its features are {feature_set.feature_names}."
                    )
                selected = chosen.setdefault((feature_set.name, feature_set.version), [])
                if name not in selected:
                    selected.append(name)
        owners: dict[str, str] = {}
        selections = []
        for (set_name, version), names in chosen.items():
            feature_set = catalog.get(set_name, version)
            columns = tuple(full_name(feature_set, n) if use_full else n for n in names)
            for column in columns:
                if column in owners:
                    raise RetrievalError(
                        f"{self._where}: column {column!r} comes from both {owners[column]} and "
                        f"{feature_set.key}; set full_names: true to get names like "
                        f"'{feature_set.name}__{column}'."
                    )
                owners[column] = feature_set.key
            selections.append(FeatureSelection(feature_set, tuple(names), columns))
        return selections

    def bind_request_features(self, catalog: Catalog, selections: list[FeatureSelection]) -> RequestFeatures:
        """The spec's request-time features over its resolved `selections` (empty when it lists none);
        errors name the spec file and the fix."""
        return bind_request_features(self._where, self.request_features, catalog, selections)


def load_retrieval_specs(folder: Path) -> list[RetrievalSpec]:
    """Every `*.yaml` retrieval spec in `folder` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    specs = [RetrievalSpec.from_yaml(f) for f in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])]
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RetrievalError(f"retrieval specs in {folder}: names {duplicated} are used twice; names must be unique.")
    return specs


def full_name(feature_set: FeatureSet, feature: str) -> str:
    """The unambiguous output name of a feature: `feature_set__feature`."""
    return f"{feature_set.name}__{feature}"
