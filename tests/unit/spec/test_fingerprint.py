"""Definition fingerprints: a transform's layout and comments do not change a version's
fingerprint; its logic does."""

from __future__ import annotations

import textwrap

from feature_pipelines.spec.fingerprint import _code_of


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
