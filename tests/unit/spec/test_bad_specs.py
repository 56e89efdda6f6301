"""Bad specs, one table: each case asserts the exact error class and a message naming the
offending item (the sources', runs' and CLI's bad input is in integration/test_bad_input.py)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from feature_pipelines import Aggregate, Entity, Feature
from feature_pipelines.errors import CatalogError, SpecError
from feature_pipelines.spec.catalog import load_catalog
from tests.factories import feature_set

SCORES = feature_set(features={"score": "float64"}, start="2024-03-01")


@pytest.mark.parametrize(("change", "error", "message"), [
    (lambda: {"features": [Feature("scor", "float64")]}, SpecError,
     "feature 'scor' is not a column of source 'events'"),
    (lambda: {"features": [Feature("score", "decimal")]}, SpecError,
     "feature 'score': unknown type 'decimal'; use one of:"),
    (lambda: {"features": [], "aggregates": [Aggregate("sum", "score", windows=["7d"])]}, SpecError,
     "source_lookback 0 is shorter than the longest rolling window 7d; set source_lookback to at least '7d'."),
    (lambda: {"entities": [Entity("user_id", "float64")]}, SpecError,
     "entity 'user_id': key type 'float64' is not allowed"),
    (lambda: {"version": 0}, SpecError, "version 0 must be a whole number >= 1"),
    (lambda: {"temporal_join_lookback": "1d", "source_delay": "7d"}, SpecError,
     "feature set 'scores': temporal_join_lookback 1d is shorter than source_delay 7d, so no join or online lookup "
     "can ever use a value: it becomes available 7d after its ts but is too old 1d after it. Set "
     "temporal_join_lookback longer than '7d', or shorten source_delay."),
], ids=["unknown column", "bad type", "lookback shorter than window", "bad key type", "bad version",
        "lookback shorter than delay"])
def test_bad_specs(change, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)) as refused:
        replace(SCORES, **change())
    assert str(refused.value).endswith(".") and not str(refused.value).endswith("..")


@pytest.mark.parametrize(("body", "message"), [
    ("from feature_pipelines import FeatureSet\n\nspend = FeatureSet(nme='spend')\n",
     "bad.py:3: TypeError: FeatureSet.__init__() got an unexpected keyword argument 'nme'; fix the definition file."),
    ("def transform(events:\n", "bad.py:1: SyntaxError: "),
    ("from feature_pipelines import Entity, Feature, FeatureSet, Materialization, Source\n"
     "s = FeatureSet(name='spend', version=1, entities=[Entity('u')], features=[Feature('x', 'float64')],\n"
     "               source=Source(name='e', path='e', timestamp='t', columns={'u': 'string', 'x': 'float64'}),\n"
     "               materialization=Materialization(stream=True))\n",
     "bad.py: feature set 'spend': materialization.stream=True needs the source 'e' to name its event id column "
     "(Source(event_id=...)), so a redelivered event is applied once."),
], ids=["bad argument", "syntax error", "stream without an event id"])
def test_a_broken_definition_file_names_its_line(tmp_path: Path, body: str, message: str) -> None:
    defs = tmp_path / "broken_defs"
    defs.mkdir()
    (defs / "bad.py").write_text(body)
    with pytest.raises(SpecError, match=re.escape(f"{defs / message}")):
        load_catalog(defs)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    defs = tmp_path / "dup_defs"
    defs.mkdir()
    body = textwrap.dedent("""
        from feature_pipelines import Entity, Feature, FeatureSet, Source
        s = FeatureSet(name="scores", version=1, entities=[Entity("u")], features=[Feature("x", "float64")],
                       source=Source(name="e", path="e", timestamp="t", columns={"u": "string", "x": "float64"}))
    """)
    (defs / "a.py").write_text(body)
    (defs / "b.py").write_text(body)
    with pytest.raises(CatalogError, match=re.escape("feature set 'scores' version 1 is declared twice")) as refused:
        load_catalog(defs)
    assert "a.py" in str(refused.value) and "b.py" in str(refused.value)
