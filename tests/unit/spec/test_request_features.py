"""Request-time features: declaration and spec errors, one table each (every message names the file
to edit and the fix), and the one evaluation every path uses: its null semantics and its errors."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_pipelines.errors import CatalogError, RequestFeatureError, RequestFieldError, RetrievalError, SpecError
from feature_pipelines.retrieval.observations import open_observations
from feature_pipelines.spec.catalog import Catalog, CatalogEntry, load_catalog
from feature_pipelines.spec.request_features import field_value
from feature_pipelines.spec.retrieval_spec import RetrievalSpec, load_retrieval_specs
from tests.factories import feature_set

# Two sets sharing the feature `x`, keyed by user_id; `scores` also has a timestamp feature.
SCORES = feature_set(features={"x": "float64", "n": "int64", "seen": "timestamp"})
OTHERS = feature_set("others", features={"x": "float64", "y": "string"})

DEFS = """
from feature_pipelines import request_feature

@request_feature(request={"amount": "float64"}, features=["n"], output="float64")
def ratio(amount, n):
    return None if amount is None or not n else amount / n

@request_feature(request={"amount": "int64"}, features=["n"], output="int64")
def total(amount, n):
    return None if amount is None or n is None else amount + n

@request_feature(features=["y"], output="int64")
def y_length(y):
    return None if y is None else len(y)

@request_feature(features=["x"], output="float64")
def doubled(x):
    return None if x is None else 2 * x

@request_feature(features=["seen"], output="bool")
def seen_at_all(seen):
    return seen is not None

@request_feature(request={"user_id": "string"}, output="string")
def echo_key(user_id):
    return user_id

@request_feature(features=["n"], output="int64")
def x(n):
    return n

@request_feature(request={"amount": "float64"}, features=["n"], output="string")
def seen(amount, n):
    return repr((amount, n))
"""


@pytest.mark.parametrize(("declaration", "message"), [
    ('@request_feature(request={"amount": "float64"}, output="timestamp")\ndef f(amount):\n    return None\n',
     "request feature 'f': output type 'timestamp' is not supported; use one of bool, float64, int64, string."),
    ('@request_feature(request={"amount": "decimal"}, output="float64")\ndef f(amount):\n    return None\n',
     "request feature 'f': request field 'amount': unknown type 'decimal'; use one of:"),
    ('@request_feature(request={"when": "date"}, output="float64")\ndef f(when):\n    return None\n',
     "request feature 'f': request field 'when' has type 'date', which request fields cannot have; use one of bool, "
     "float64, int64, string."),
    ('@request_feature(request={"amount": "float64"}, features=["x"], output="float64")\ndef f(amount, y):\n    return 1\n',
     "request feature 'f': the function's parameters (amount, y) must be exactly its inputs (amount, x): the request "
     "fields and features it reads; rename them to match."),
    ('@request_feature(output="float64")\ndef f():\n    return 1.0\n',
     "request feature 'f': reads no input; declare request={...} fields or features=[...]."),
    ('@request_feature(request={"x": "float64"}, features=["x"], output="float64")\ndef f(x):\n    return x\n',
     "request feature 'f': ['x'] is both a request field and a feature; rename the request field."),
    ('@request_feature(request={"amount": "float64"}, output="float64")\ndef f(*amount):\n    return None\n',
     "request feature 'f': the function's parameters (amount) must be exactly its inputs (amount)"),
], ids=["unsupported output", "unknown type", "unsupported field type", "parameters differ", "no input",
        "field is a feature", "varargs"])
def test_bad_declarations_name_the_file_and_the_fix(tmp_path: Path, declaration: str, message: str) -> None:
    defs = tmp_path / "decl_defs"
    defs.mkdir()
    (defs / "rf.py").write_text("from feature_pipelines import request_feature\n\n" + declaration)
    with pytest.raises(SpecError) as refused:
        load_catalog(defs)
    assert str(refused.value).startswith(f"{defs / 'rf.py'}: {message}")
    assert "\n" not in str(refused.value) and str(refused.value).endswith(".") and not str(refused.value).endswith("..")


def _catalog(tmp_path: Path) -> Catalog:
    """SCORES and OTHERS, with the request features of DEFS loaded from a definitions folder."""
    defs = tmp_path / "rf_defs"
    defs.mkdir()
    (defs / "features.py").write_text(DEFS)
    loaded = load_catalog(defs)
    return Catalog([CatalogEntry(SCORES, defs / "sets.py"), CatalogEntry(OTHERS, defs / "sets.py")],
                   [loaded.request_feature(n) for n in ("ratio", "total", "y_length", "doubled", "seen_at_all",
                                                        "echo_key", "x", "seen")])


def _spec_file(tmp_path: Path, features: list[str], request_features: object, full_names: bool = False) -> Path:
    folder = tmp_path / "retrieval_specs"
    folder.mkdir(exist_ok=True)
    file = folder / "model.yaml"
    file.write_text(textwrap.dedent(f"""\
        name: model
        full_names: {str(full_names).lower()}
        features: {features}
        request_features: {request_features}
    """))
    return file


@pytest.mark.parametrize(("features", "request_features", "full_names", "message"), [
    (["scores:1:n"], "[amount_ratio]", False,
     "request feature 'amount_ratio': no request feature 'amount_ratio' is declared; known request features: doubled, "
     "echo_key, ratio, seen, seen_at_all, total, x, y_length. Declare it with @request_feature in a file of feature_defs/, "
     "or fix the name."),
    (["scores:1:x"], "[y_length]", False,
     "request feature 'y_length': reads feature 'y', which the spec does not fetch; add its entry ('others:1:y') to "
     "the spec's features, or fix the function's features=."),
    (["scores:1:x", "others:1:x"], "[doubled]", True,
     "request feature 'doubled': feature 'x' is fetched from ['scores_v1', 'others_v1']; name the one it reads like "
     "'scores__x' in features= and in its parameters."),
    (["scores:1:*"], "[seen_at_all]", False,
     "request feature 'seen_at_all': feature 'seen' of scores_v1 is timestamp, which request features cannot read; "
     "they read bool, float64, int64, string, float32, int32 features."),
    (["scores:1:n"], "[echo_key]", False,
     "request feature 'echo_key': request field 'user_id' has the name of an entity key of the spec; give the request "
     "field another name."),
    (["scores:1:n"], "[ratio, total]", False,
     "request feature 'total': request field 'amount' is int64 here but float64 in request feature 'ratio'; declare "
     "one type for it in both."),
    (["scores:1:n", "scores:1:x"], "[x]", False,
     "request feature 'x': its output column has the name of a key, feature or request field of the spec; rename the "
     "function (or pass name=...)."),
    (["scores:1:n"], "[ratio, ratio]", False, "request feature 'ratio': listed twice under request_features; list it once."),
], ids=["unknown function", "input not fetched", "ambiguous input", "unreadable type", "field is a key",
        "field typed twice", "output collides", "listed twice"])
def test_bad_spec_request_features_name_the_spec_file(tmp_path: Path, features: list[str], request_features: str,
                                                      full_names: bool, message: str) -> None:
    file = _spec_file(tmp_path, features, request_features, full_names)
    [spec] = load_retrieval_specs(file.parent)
    catalog = _catalog(tmp_path)
    with pytest.raises(RetrievalError) as refused:
        spec.bind_request_features(catalog, spec.resolve(catalog))
    assert str(refused.value) == f"retrieval spec {file}, {message}"


@pytest.mark.parametrize("request_features, message", [
    ("amount_ratio", "request_features must be a list of names, like [amount_to_mean_30d]."),
    ("[1.5]", "request_features must list the names of request features, like [amount_to_mean_30d], not [1.5]."),
])
def test_request_features_must_be_a_list_of_names(tmp_path: Path, request_features: str, message: str) -> None:
    file = _spec_file(tmp_path, ["scores:1:n"], request_features)
    with pytest.raises(RetrievalError, match=re.escape(message)) as refused:
        load_retrieval_specs(file.parent)
    assert str(refused.value).startswith(f"retrieval spec {file}")


def test_a_request_feature_declared_in_two_files(tmp_path: Path) -> None:
    defs = tmp_path / "twice_defs"
    defs.mkdir()
    body = "from feature_pipelines import request_feature\n\n" \
           "@request_feature(features=['x'], output='float64')\ndef doubled(x):\n    return x\n"
    (defs / "a.py").write_text(body)
    (defs / "b.py").write_text("from twice_defs.a import doubled  # the same object: fine\n")
    (defs / "c.py").write_text(body)
    with pytest.raises(CatalogError, match=re.escape(f"request feature 'doubled' is declared twice: in {defs / 'a.py'} "
                                                     f"and in {defs / 'c.py'}; rename one of them.")):
        load_catalog(defs)


def _bound(tmp_path: Path, names: str, features: list[str]):
    file = _spec_file(tmp_path, features, names)
    [spec] = load_retrieval_specs(file.parent)
    catalog = _catalog(tmp_path)
    selections = spec.resolve(catalog)
    return selections, spec.bind_request_features(catalog, selections)


def test_request_fields_must_be_given(tmp_path: Path) -> None:
    selections, request = _bound(tmp_path, "[ratio]", ["scores:1:n"])
    assert request.fields == {"amount": "float64"} and request.columns == ("ratio",)
    frame = pd.DataFrame({"user_id": ["u1"], "t": pd.to_datetime(["2024-01-02"], utc=True)})
    with pytest.raises(RetrievalError, match=re.escape(
            "observations lack request field(s) ['amount'] that request feature(s) ['ratio'] read; add them: amount "
            "(float64).")):
        open_observations(frame, "t", selections, request)
    with pytest.raises(RetrievalError, match=re.escape("observations have column(s) ['ratio'] named like request "
                                                       "features of the spec; rename those columns.")):
        open_observations(frame.assign(amount=1.0, ratio=2.0), "t", selections, request)
    stored = tmp_path / "obs.parquet"
    frame.assign(amount=["12.5"]).to_parquet(stored)
    with pytest.raises(RetrievalError, match=re.escape("observation column 'amount' has type string, but request field "
                                                       "'amount' is float64; convert the column.")):
        open_observations(stored, "t", selections, request)
    with pytest.raises(RetrievalError, match=re.escape("entity rows lack request field(s) ['amount']")):
        request.check_columns({"user_id": ["u1"]}, "entity rows")


def test_nulls_reach_the_function_as_none_and_nan_is_null(tmp_path: Path) -> None:
    """Whatever a caller holds (NumPy scalars, NaN, pandas' NA, ints in a float field, a pandas int
    column widened to floats by its nulls), the function gets plain values or None; NaN and
    infinite float results are null."""
    _, request = _bound(tmp_path, "[ratio, doubled, seen]", ["scores:1:n", "scores:1:x"])
    got = request.apply({
        "amount": [10, np.float64(3.0), None, float("nan"), pd.NA, 5.0, 7, 2.0],
        "n": [4.0, np.int64(2), 2, 2, 2, None, 2, 0],  # an int feature arrives as floats offline when it has nulls
        "x": [1.5, None, float("nan"), np.float32(0.5), 2.0, 3.0, 1e308, float("inf")],
    })
    assert got["ratio"] == [2.5, 1.5, None, None, None, None, 3.5, None]
    assert got["doubled"] == [3.0, None, None, 1.0, 4.0, 6.0, None, None]  # 2e308 and inf are infinite: null
    # What the function got, exactly: floats for the float64 field, ints for the int64 feature, None for nulls.
    assert got["seen"] == ["(10.0, 4)", "(3.0, 2)", "(None, 2)", "(None, 2)", "(None, 2)", "(5.0, None)", "(7.0, 2)",
                           "(2.0, 0)"]
    assert all(type(v) is float for v in got["ratio"] + got["doubled"] if v is not None)
    assert [field_value(v, "int64") for v in (3, 3.0, np.int64(3), None, float("nan"), pd.NA)] == [3, 3, 3, None, None, None]
    assert type(field_value(np.float64(2.0), "float64")) is float and field_value(np.bool_(True), "bool") is True
    for bad, dtype in ((2.5, "int64"), (True, "int64"), (True, "float64"), ("1", "float64"), (1, "bool"), (1, "string")):
        with pytest.raises(ValueError):
            field_value(bad, dtype)
    assert math.isinf(field_value(float("inf"), "float64"))  # an infinite input stays infinite


def test_a_wrong_field_value_names_the_field_and_row(tmp_path: Path) -> None:
    _, request = _bound(tmp_path, "[ratio]", ["scores:1:n"])
    with pytest.raises(RequestFieldError) as refused:
        request.apply({"amount": [1.0, "12.5"], "n": [1, 2]})
    assert (refused.value.field, refused.value.row, refused.value.value) == ("amount", 1, "12.5")
    assert str(refused.value) == "request field 'amount' must be a number or null, not '12.5' (row 1); convert the values."


def test_a_failing_function_names_itself_and_its_inputs(tmp_path: Path) -> None:
    defs = tmp_path / "fragile_defs"
    defs.mkdir()
    (defs / "rf.py").write_text(textwrap.dedent("""
        from feature_pipelines import request_feature

        @request_feature(request={"amount": "float64"}, features=["n"], output="float64")
        def fragile(amount, n):
            return amount / n

        @request_feature(request={"amount": "float64"}, features=["n"], output="int64")
        def sloppy(amount, n):
            return amount
    """))
    loaded = load_catalog(defs)
    catalog = Catalog([CatalogEntry(SCORES, defs / "sets.py")], [loaded.request_feature("fragile"),
                                                                 loaded.request_feature("sloppy")])
    for name, message in (
        ("fragile", f"request feature fragile ({defs / 'rf.py'}) raised ZeroDivisionError: float division by zero for "
                    "amount=2.0, n=0; fix the function: it gets None for a null input and returns float64 or None."),
        ("sloppy", f"request feature sloppy ({defs / 'rf.py'}) returned 2.0 (float) for amount=2.0, n=0, not int64 or "
                   "None; fix the function."),
    ):
        spec = RetrievalSpec.of(["scores:1:n"], name="m", request_features=[name])
        request = spec.bind_request_features(catalog, spec.resolve(catalog))
        with pytest.raises(RequestFeatureError) as failed:
            request.apply({"amount": [1.0, 2.0], "n": [1, 0]} if name == "fragile" else {"amount": [2.0], "n": [0]})
        assert str(failed.value) == message
