"""The online codec: what `decode_many` gives back is what was encoded, value by value and type by
type (nulls, NaN, infinities, extreme ints, booleans, strings, dates and timestamps, entities with
nothing stored, hidden rows), and its typed blocks are what pandas makes of the same lists."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.spec.feature_set import FeatureSet
from feature_pipelines.stores.online.codec import DecodedValues, RowCodec
from tests.factories import feature_set

UTC = timezone.utc
EVERY = feature_set("every", features={"f64": "float64", "i64": "int64", "label": "string", "flag": "bool",
                                       "f32": "float32", "at": "timestamp", "i32": "int32", "day": "date"})
NUMBERS = feature_set("numbers", features={f"x{i}": "float64" for i in range(9)} | {"n": "int64", "ok": "bool"})
TEXTS = feature_set("texts", features={"label": "string", "at": "timestamp"})
SETS = {"every": EVERY, "numbers": NUMBERS, "texts": TEXTS}

FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e308, -5e-324])
INTS = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**53 + 1])
TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC))
VALUES = {"float64": FLOATS, "float32": FLOATS, "int64": INTS, "int32": st.integers(-(2**31), 2**31 - 1),
          "bool": st.booleans(), "string": st.text(max_size=8), "timestamp": TIMES,
          "date": st.dates(min_value=date(1, 1, 1))}


@st.composite
def replies(draw: st.DrawFn, fs: FeatureSet) -> list[tuple[datetime, dict[str, Any]] | None]:
    """Entities in lookup order: None where nothing is stored, else (ts, record); any value may be
    null, and nulls are drawn apart from the values, so that replies with few nulls come up as often
    as replies with many (the decoder treats them differently)."""
    row = st.tuples(TIMES, st.fixed_dictionaries({f.name: VALUES[f.dtype] for f in fs.features}))
    stored: list = draw(st.lists(row, max_size=12))
    if not stored:
        return stored
    cells = st.tuples(st.integers(0, len(stored) - 1), st.sampled_from(fs.feature_names))
    for i, feature in draw(st.lists(cells, max_size=3 * len(stored))):
        stored[i][1][feature] = None
    for i in draw(st.lists(st.integers(0, len(stored) - 1), max_size=len(stored))):
        stored[i] = None
    return stored


def expected(fs: FeatureSet, stored: tuple[datetime, dict[str, Any]] | None, feature: str) -> Any:
    """What a lookup must give for one value, straight from the record that was encoded."""
    if stored is None:
        return None
    value, dtype = stored[1][feature], {f.name: f.dtype for f in fs.features}[feature]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if dtype in ("timestamp", "date"):
        return value.isoformat()
    return float(value) if dtype.startswith("float") else value


def exactly(values: list) -> list:
    """Values compared with their types (True is not 1) and signs (-0.0 is not 0.0)."""
    return [(type(v).__name__, repr(v)) for v in values]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(SETS)))
def test_decoded_values_are_the_encoded_ones(data: st.DataObject, name: str) -> None:
    fs = SETS[name]
    codec = RowCodec(fs)
    stored = data.draw(replies(fs))
    # Streamed rows carry a valid_until: none of them, all, or some (each decoded its own way).
    mode = data.draw(st.sampled_from(["batch", "streamed", "mixed"]))
    untils = [None if s is None or mode == "batch" or (mode == "mixed" and data.draw(st.booleans()))
              else data.draw(st.integers(0, 2**62)) for s in stored]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    decoded = codec.decode_many([None if s is None else codec.encode_micros((s[0] - epoch) // timedelta(microseconds=1), s[1], u)
                                 for s, u in zip(stored, untils)])
    assert decoded.valid_until_micros.tolist() == [-1 if u is None else u for u in untils]
    assert decoded.ts_micros.tolist() == [-1 if s is None else (s[0] - epoch) // timedelta(microseconds=1) for s in stored]
    # Any subset of the features, in any order (a retrieval spec's selection).
    order = data.draw(st.permutations(fs.feature_names))
    features = order[: data.draw(st.integers(1, len(order)))]
    hidden = np.zeros(len(stored), dtype=bool)
    if stored:
        hidden[data.draw(st.lists(st.integers(0, len(stored) - 1), max_size=len(stored)))] = True
    decoded.hide(hidden)  # expiry: a hidden entity's values are all null
    shown = [None if h else s for s, h in zip(stored, hidden.tolist())]
    lists = decoded.lists(features)
    for feature, column in zip(features, lists):
        assert exactly(column) == exactly([expected(fs, s, feature) for s in shown]), feature
    assert_blocks_are_pandas_of_lists(decoded, features)


def assert_blocks_are_pandas_of_lists(decoded: DecodedValues, features: list[str]) -> None:
    """The typed blocks hold what pandas makes of the lists, type included, each feature once."""
    by_pandas = pd.DataFrame(dict(zip(features, decoded.lists(features))))
    placed = []
    for positions, block in decoded.blocks(features):
        assert block.shape == (len(positions), len(by_pandas))
        for row, position in enumerate(positions):
            pd.testing.assert_series_equal(pd.Series(block[row], name=features[position]), by_pandas[features[position]],
                                           check_exact=True)
        placed += positions
    assert sorted(placed) == list(range(len(features)))


@pytest.mark.parametrize("missing", [False, True], ids=["all stored", "one missing"])
def test_each_feature_is_typed_on_its_own(missing: bool) -> None:
    """Beside an int feature with a null (float64), an int feature without one stays int64; the
    same for bools (object) and for a float feature null everywhere (object)."""
    codec = RowCodec(EVERY)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    raw = [codec.encode(t, {"i64": None, "i32": 5, "flag": True, "f64": None, "f32": 1.5}),
           codec.encode(t, {"i64": 3, "i32": 6, "flag": None, "f64": None, "f32": 2.5})]
    decoded = codec.decode_many(raw + [None] if missing else raw)
    assert_blocks_are_pandas_of_lists(decoded, ["i64", "i32", "flag", "f64", "f32", "label"])


def test_a_value_of_another_layout_is_an_error() -> None:
    """A value that is not of its feature set's layout (a foreign key in its namespace) is not read as numbers."""
    codec = RowCodec(NUMBERS)
    good = codec.encode(datetime(2024, 1, 1, tzinfo=UTC), {"x0": 1.0})
    with pytest.raises(OnlineStoreError, match="does not have the layout of its feature set"):
        codec.decode_many([good, good[:-1]])
