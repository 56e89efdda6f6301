"""The package's layering, checked on the source: each layer imports only what its
`__init__.py` allows, only orchestration/ and cli/ import Dagster, and the top level stays small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import PROJECT_DIR

PACKAGE = PROJECT_DIR / "feature_pipelines"
TOP_LEVEL = {"errors", "settings", "faults", "clock"}
# What each layer may import besides itself and the neutral top-level modules above.
ALLOWED = {
    "spec": set(),
    "planning": {"spec"},
    "stores": {"spec", "planning"},
    "compute": {"spec", "planning", "stores"},
    "retrieval": {"spec", "planning", "stores", "compute", "streaming"},  # FeatureStore.push
    "orchestration": {"spec", "planning", "stores", "compute", "retrieval", "streaming"},
    "cli": {"spec", "planning", "stores", "compute", "retrieval", "orchestration", "serving", "streaming"},
    # Beside the layers: the feature server reads the online store only, and starts without Spark;
    # it pushes events through streaming/, which needs no more than it does.
    "serving": {"spec", "stores", "streaming"},
    "streaming": {"spec", "stores"},
}
# Beside the layers, never Spark or Delta (and never Dagster, checked below for every layer).
NO_SPARK_OR_DELTA = {"serving", "streaming"}
DAGSTER = ("dagster", "dagster_pyspark", "dagster_postgres", "dagster_webserver")


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (imports inside functions count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _layer_of(module: str) -> str | None:
    """`feature_pipelines.<layer>....` -> layer; a top-level module -> its name."""
    parts = module.split(".")
    if parts[0] != "feature_pipelines" or len(parts) < 2:
        return None
    return parts[1]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_layer_imports_only_the_layers_it_may() -> None:
    broken = []
    for path in _sources():
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1:
            continue  # the top level: the API, definitions.py, and neutral modules checked below
        layer = relative.parts[0]
        for module in _imports(path):
            target = _layer_of(module)
            if target is None or target == layer or target in TOP_LEVEL:
                continue
            if target not in ALLOWED[layer]:
                broken.append(f"{relative} imports {module}")
    assert not broken, "layer rule broken:\n" + "\n".join(broken)


def test_only_orchestration_and_cli_import_dagster() -> None:
    allowed = {"orchestration", "cli"}
    offenders = [
        str(path.relative_to(PACKAGE)) for path in _sources()
        if any(m.split(".")[0] in DAGSTER for m in _imports(path))
        and path.relative_to(PACKAGE).parts[0] not in allowed and path.name != "definitions.py"
    ]
    assert offenders == []


def test_serving_and_streaming_import_no_spark_or_delta() -> None:
    offenders = [
        str(path.relative_to(PACKAGE)) for path in _sources()
        if path.relative_to(PACKAGE).parts[0] in NO_SPARK_OR_DELTA
        and any(m.split(".")[0] in ("pyspark", "py4j", "deltalake") for m in _imports(path))
    ]
    assert offenders == []


@pytest.mark.parametrize("module", sorted(TOP_LEVEL))
def test_neutral_top_level_modules_import_no_layer(module: str) -> None:
    layers = {_layer_of(m) for m in _imports(PACKAGE / f"{module}.py")} - {None} - TOP_LEVEL
    assert layers == set()


def test_top_level_is_small_and_every_layer_says_what_it_may_import() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    assert set(top) == {"__init__.py", "definitions.py"} | {f"{m}.py" for m in TOP_LEVEL}
    folders = sorted(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")
    assert {f.name for f in folders} >= set(ALLOWED)
    for folder in folders:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"{folder.relative_to(PACKAGE)}/__init__.py lacks its layer docstring"


def test_public_api_imports() -> None:
    from feature_pipelines import (  # noqa: F401
        Aggregate, Entity, Expectation, Feature, FeatureSet, FeatureStore, FeatureStoreError, Materialization,
        Partitions, Quality, RetrievalSpec, Source,
    )
    from feature_pipelines.retrieval import FeatureStore as FromRetrieval

    assert FeatureStore is FromRetrieval
