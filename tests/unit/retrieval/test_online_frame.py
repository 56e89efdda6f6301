"""The DataFrame of an online lookup, made from typed blocks, equals `pd.DataFrame` of the lists
`as_frame=False` returns (column order, names, types, values), and keeps an entity DataFrame's own columns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from feature_pipelines.retrieval.online_frame import OnlineFrameLayout, column_of, list_column
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.online.codec import RowCodec
from feature_pipelines.stores.online.lookup import SetValues, ValueColumns
from tests.factories import feature_set

UTC = timezone.utc
T = datetime(2024, 3, 1, tzinfo=UTC)
USERS = feature_set("users", features={"score": "float64", "visits": "int64", "vip": "bool", "tier": "string",
                                       "seen": "timestamp"})
SHOPS = feature_set("shops", keys={"shop_id": "int64"}, features={"rating": "float64", "open": "bool"})
ROWS = {  # entity -> (ts, record); absent entities have nothing stored
    "u1": (T, {"score": 1.5, "visits": 3, "vip": True, "tier": "gold", "seen": T}),
    "u2": (T, {"score": float("nan"), "visits": None, "vip": None, "tier": None, "seen": None}),
    "u3": (T - timedelta(days=1), {"score": -0.0, "visits": 2**62, "vip": False, "tier": "", "seen": T}),
    7: (T, {"rating": 4.0, "open": True}),
    8: (T, {"rating": None, "open": False}),
}


def found(selection: FeatureSelection, entities: list, hidden: list[bool] | None = None) -> SetValues:
    """What `lookup` returns for these entities, from values encoded as Redis holds them."""
    codec = RowCodec(selection.feature_set)
    decoded = codec.decode_many([codec.encode(*ROWS[e]) if e in ROWS else None for e in entities])
    expired = np.array(hidden or [False] * len(entities))
    decoded.hide(expired)
    return SetValues(selection, decoded.ts_micros, expired, ValueColumns(selection, decoded))


def by_pandas(given: dict[str, list], values: list[SetValues], index=None) -> pd.DataFrame:
    """The frame as `get_online_features` built it before: pd.DataFrame of the merged lists."""
    columns = dict(given)
    for v in values:
        columns.update(v.columns)
    return pd.DataFrame(columns, index=index)


USER_ALL = FeatureSelection(USERS, ("score", "visits", "vip", "tier", "seen"), ("score", "visits", "vip", "tier", "seen"))
USER_SOME = FeatureSelection(USERS, ("tier", "score"), ("users__tier", "users__score"))
SHOP_ALL = FeatureSelection(SHOPS, ("open", "rating"), ("open", "rating"))
CASES = {
    "present": (["u1", "u3"], None),
    "nulls and missing": (["u1", "u2", "nobody", "u3"], None),
    "all missing": (["nobody", "ghost"], None),
    "one entity": (["u2"], None),
    "expired": (["u1", "u2", "u3"], [False, False, True]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("selections", [[USER_ALL], [USER_SOME], [USER_SOME, SHOP_ALL]], ids=["all", "some", "two sets"])
def test_frame_equals_pandas_of_the_lists(case: str, selections: list[FeatureSelection]) -> None:
    users, hidden = CASES[case]
    shops = [7, 8, 9, 7][: len(users)] + [8] * max(0, len(users) - 4)
    given = {"user_id": users, "shop_id": shops, "label": [f"l{i}" if i % 2 else None for i in range(len(users))]}
    values = [found(s, users if s.feature_set is USERS else shops, hidden if s.feature_set is USERS else None)
              for s in selections]
    frame = OnlineFrameLayout(list(given), selections).frame(
        {c: list_column(v) for c, v in given.items()}, values, pd.RangeIndex(len(users)))
    pd.testing.assert_frame_equal(frame, by_pandas(given, values), check_exact=True)


def test_a_later_column_of_the_same_name_replaces_an_earlier_one_in_place() -> None:
    """As a dict update: an entity column named like a feature, and two sets giving the same column."""
    other = feature_set("others", features={"tier": "string"})
    selections = [FeatureSelection(USERS, ("score", "tier"), ("score", "tier")), FeatureSelection(other, ("tier",), ("tier",))]
    given = {"score": ["mine", "yours"], "user_id": ["u1", "u3"]}
    values = [found(selections[0], ["u1", "u3"]), found(selections[1], ["u1", "u3"])]
    frame = OnlineFrameLayout(list(given), selections).frame({c: list_column(v) for c, v in given.items()}, values,
                                                             pd.RangeIndex(2))
    expected = by_pandas(given, values)
    assert list(frame.columns) == ["score", "user_id", "tier"]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_an_entity_frame_keeps_its_columns_and_index() -> None:
    rows = pd.DataFrame({
        "user_id": pd.Categorical(["u3", "u1", "nobody"]),
        "asked_at": pd.to_datetime(["2024-03-01", "2024-03-02", "2024-03-03"], utc=True).astype("datetime64[us, UTC]"),
        "n": pd.array([1, None, 3], dtype="Int64"),
        "day": pd.to_datetime(["2024-03-01", "2024-03-02", "2024-03-03"]),
        "weight": [0.5, 1.0, 2.0],
    }, index=pd.Index([10, 20, 30], name="row"))
    values = [found(USER_SOME, rows["user_id"].tolist())]
    frame = OnlineFrameLayout(list(rows.columns), [USER_SOME]).frame(
        {c: column_of(rows[c]) for c in rows.columns}, values, rows.index)
    pd.testing.assert_frame_equal(frame[list(rows.columns)], rows)
    pd.testing.assert_frame_equal(frame[list(USER_SOME.columns)],
                                  by_pandas({}, values, rows.index), check_exact=True)
    frame.loc[10, "weight"] = 9.0  # the caller's frame is not written through the result
    assert rows.loc[10, "weight"] == 0.5


def test_no_entities() -> None:
    rows = pd.DataFrame({"user_id": pd.Series([], dtype=object)})
    values = [found(USER_ALL, [])]
    frame = OnlineFrameLayout(["user_id"], [USER_ALL]).frame({"user_id": column_of(rows["user_id"])}, values, rows.index)
    assert list(frame.columns) == ["user_id", *USER_ALL.columns] and len(frame) == 0
    pd.testing.assert_frame_equal(frame[list(USER_ALL.columns)], by_pandas({}, values, rows.index))
