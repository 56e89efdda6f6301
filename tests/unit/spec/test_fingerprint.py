"""Definition fingerprints: a transform's layout and comments do not change a version's
fingerprint; its logic does."""

from __future__ import annotations

import textwrap

from dataclasses import replace

from feature_pipelines import Materialization, Source
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.spec.fingerprint import _code_of, fingerprint
from tests.helpers import PROJECT_DIR


def test_transform_fingerprint_ignores_layout_but_not_logic() -> None:
    namespace: dict = {}
    exec(textwrap.dedent("""
        def first(df, window):
            return df.where("amount > 0")
        def second(df, window):
            # only a comment and blank lines differ

            return df.where("amount > 0")
        def third(df, window):
            return df.where("amount >= 0")
    """), namespace)
    # exec'd functions have no source file: their compiled code stands in for it.
    assert _code_of(namespace["first"]) == _code_of(namespace["second"]) != _code_of(namespace["third"])
    assert _code_of(_layout_a) == _code_of(_layout_b) != _code_of(_logic_changed)


def _layout_a(df, window):
    return df.where("amount > 0")


def _layout_b(df, window):  # same logic, other layout
    return df.where(
        "amount > 0"
    )


def _logic_changed(df, window):
    return df.where("amount > 1")


def test_streaming_changes_no_fingerprint() -> None:
    """`stream` and `event_id` change no stored value, so versions materialized before they were
    declared keep loading: the example sets' fingerprints are the ones their tables were written with."""
    catalog = load_catalog(PROJECT_DIR / "feature_defs")
    assert {fs.key: fingerprint(fs) for fs in catalog} == {
        "accounts_v1": "1100b3940742b6c6", "merchants_v1": "c025877dc398d3c3", "transactions_v1": "20136c21ecdefd5b"}
    streamed = catalog.get("transactions")
    assert streamed.materialization.stream and streamed.source.event_id == "transaction_id"
    batch_only = replace(streamed, features=(), materialization=Materialization(delay="1h"),
                         source=Source(**{**vars(streamed.source), "event_id": None}))
    assert fingerprint(batch_only) == fingerprint(streamed)
