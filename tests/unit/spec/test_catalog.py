"""The catalog: every file in feature_defs/ is discovered; duplicates and bad specs name their file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from feature_pipelines.errors import CatalogError, SpecError
from feature_pipelines.spec.catalog import load_catalog
from tests.helpers import PROJECT_DIR


def _defs_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "defs_under_test"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_text(textwrap.dedent(body))
    return folder


SPEC_FILE = """
from feature_pipelines import Entity, Feature, FeatureSet, Source
src = Source(name="s", path="s", timestamp="t", columns={"k": "string", "v": "float64"})
fs = FeatureSet(name="{name}", version=1, entities=[Entity("k")], source=src, features=[Feature("v", "float64")])
"""


def test_catalog_discovers_every_file(tmp_path: Path) -> None:
    folder = _defs_dir(tmp_path, {"a.py": SPEC_FILE.replace("{name}", "alpha"), "b.py": SPEC_FILE.replace("{name}", "beta")})
    catalog = load_catalog(folder)
    assert [fs.key for fs in catalog] == ["alpha_v1", "beta_v1"]
    assert catalog.file_of(catalog.get("beta")).name == "b.py"
    with pytest.raises(CatalogError, match="unknown feature set 'gamma'; known feature sets: alpha, beta"):
        catalog.get("gamma")
    with pytest.raises(CatalogError, match="has no version 3"):
        catalog.get("alpha", 3)


def test_catalog_rejects_duplicates_across_files(tmp_path: Path) -> None:
    folder = _defs_dir(tmp_path, {"a.py": SPEC_FILE.replace("{name}", "alpha"), "b.py": SPEC_FILE.replace("{name}", "alpha")})
    with pytest.raises(CatalogError, match=r"declared twice: in .*a\.py and in .*b\.py"):
        load_catalog(folder)


def test_spec_error_names_the_file(tmp_path: Path) -> None:
    bad = SPEC_FILE.replace("{name}", "alpha").replace('Feature("v", "float64")', 'Feature("nope", "float64")')
    folder = _defs_dir(tmp_path, {"broken.py": bad})
    with pytest.raises(SpecError, match=r"broken\.py: feature set 'alpha': feature 'nope' is not a column"):
        load_catalog(folder)


def test_project_catalog_loads() -> None:
    catalog = load_catalog(PROJECT_DIR / "feature_defs")
    assert {fs.key for fs in catalog} == {"transactions_v1", "accounts_v1", "merchants_v1"}
