"""Discover the feature sets and request-time features declared in `feature_defs/`: every `*.py`
file there is loaded."""

from __future__ import annotations

import importlib.util
import sys
import traceback
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from feature_pipelines.errors import CatalogError, FeatureStoreError, SpecError, inline
from feature_pipelines.spec.feature_set import FeatureSet, iter_feature_sets
from feature_pipelines.spec.request_features import RequestFeature, iter_request_features


@dataclass(frozen=True)
class CatalogEntry:
    feature_set: FeatureSet
    file: Path


class Catalog:
    """All feature set versions, by name and version, and the request-time features, by name."""

    def __init__(self, entries: list[CatalogEntry], request_features: Sequence[RequestFeature] = ()):
        self._entries = {(e.feature_set.name, e.feature_set.version): e for e in entries}
        self._request_features = {f.name: f for f in request_features}

    def __iter__(self) -> Iterator[FeatureSet]:
        return (e.feature_set for e in sorted(self._entries.values(), key=lambda e: (e.feature_set.name, e.feature_set.version)))

    def __len__(self) -> int:
        return len(self._entries)

    def file_of(self, feature_set: FeatureSet) -> Path:
        return self._entries[(feature_set.name, feature_set.version)].file

    def get(self, name: str, version: int | None = None) -> FeatureSet:
        """The named feature set; the latest version when `version` is None."""
        versions = sorted(v for (n, v) in self._entries if n == name)
        if not versions:
            known = ", ".join(sorted({n for n, _ in self._entries})) or "none"
            raise CatalogError(f"unknown feature set {name!r}; known feature sets: {known}.")
        if version is None:
            version = versions[-1]
        if (name, version) not in self._entries:
            raise CatalogError(
                f"feature set {name!r} has no version {version}; its versions are {versions}."
            )
        return self._entries[(name, version)].feature_set

    def request_feature(self, name: str) -> RequestFeature:
        """The request-time feature declared under `name`."""
        if name not in self._request_features:
            known = ", ".join(sorted(self._request_features)) or "none"
            raise CatalogError(f"no request feature {name!r} is declared; known request features: {known}. Declare it "
                               "with @request_feature in a file of feature_defs/, or fix the name.")
        return self._request_features[name]


def load_catalog(defs_dir: Path) -> Catalog:
    """Import every module in `defs_dir` and collect the FeatureSets it declares."""
    if not defs_dir.is_dir():
        raise CatalogError(f"feature definitions folder {defs_dir} does not exist; create it or set FEATURE_DEFS_DIR.")
    entries: list[CatalogEntry] = []
    seen: dict[tuple[str, int], Path] = {}
    request_features: dict[str, RequestFeature] = {}
    for file in sorted(defs_dir.glob("*.py")):
        if file.name.startswith("_"):
            continue
        module = vars(_import(file))
        for request_feature in iter_request_features(module.values()):
            other = request_features.setdefault(request_feature.name, request_feature)
            if other is not request_feature:  # the same object imported into another file is fine
                raise CatalogError(
                    f"request feature {request_feature.name!r} is declared twice: in {other.file} and in "
                    f"{request_feature.file}; rename one of them.")
        for feature_set in iter_feature_sets(module.values()):
            ident = (feature_set.name, feature_set.version)
            if ident in seen:
                raise CatalogError(
                    f"feature set {feature_set.name!r} version {feature_set.version} is declared twice: "
                    f"in {seen[ident]} and in {file}; give one of them a new name or version."
                )
            seen[ident] = file
            entries.append(CatalogEntry(feature_set, file))
    return Catalog(entries, list(request_features.values()))


def _import(file: Path) -> object:
    """Import `file` as `<folder>.<stem>`, so definition files can import each other."""
    package = file.parent.name
    if not package.isidentifier():
        raise CatalogError(f"feature definitions folder {file.parent} must have a Python-identifier name.")
    _use_package(file.parent)
    try:
        return importlib.import_module(f"{package}.{file.stem}")
    except FeatureStoreError as exc:
        raise SpecError(f"{file}: {exc}") from exc
    except Exception as exc:  # a typo or a bad argument in the user's file: name the line
        raise SpecError(f"{_line_of(file, exc)}: {type(exc).__name__}: {inline(exc)}; fix the definition file.") from exc


def _line_of(file: Path, exc: BaseException) -> str:
    """`file:line` of the line in `file` where `exc` happened, or just `file`."""
    if isinstance(exc, SyntaxError) and exc.lineno and Path(exc.filename or "") == file:
        return f"{file}:{exc.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if Path(frame.filename) == file]
    return f"{file}:{lines[-1]}" if lines else str(file)


def _use_package(folder: Path) -> None:
    """Make `folder` importable as a package, forgetting a same-named one loaded from elsewhere."""
    package = folder.name
    loaded = sys.modules.get(package)
    if loaded is not None and [str(Path(p).resolve()) for p in getattr(loaded, "__path__", [])] != [str(folder.resolve())]:
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
    if package not in sys.modules:
        init = folder / "__init__.py"
        if init.exists():
            spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(folder)])
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[package] = module
            spec.loader.exec_module(module)
        else:
            module = types.ModuleType(package)
            module.__path__ = [str(folder)]
            sys.modules[package] = module
