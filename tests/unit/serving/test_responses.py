"""Response rows: one per entity in order, values by column, each feature set's status and ts."""

from __future__ import annotations

import json

import numpy as np

from feature_pipelines.serving.requests import KeyColumn
from feature_pipelines.serving.responses import body, feature_rows, iso_times
from feature_pipelines.stores.online.codec import micros_to_datetime
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.online.lookup import SetValues
from tests.factories import feature_set
from tests.helpers import MATERIALIZED_AT

USERS = feature_set("users", features={"x": "float64", "tier": "string"})
TS = 1_707_955_200_000_001  # 2024-02-15T00:00:00.000001Z


def test_rows_carry_values_status_and_ts_per_entity() -> None:
    found = [SetValues(FeatureSelection(USERS, ("x", "tier"), ("users__x", "users__tier")),
                       ts_micros=np.array([TS, -1, TS - 1]), expired=np.array([False, False, True]),
                       columns={"users__x": [1.5, None, None], "users__tier": ["gold", None, None]})]
    rows = feature_rows([KeyColumn("user_id", "string")], {"user_id": ["u1", "nobody", "u3"]}, found)
    assert rows == [
        {"entity": {"user_id": "u1"}, "values": {"users__x": 1.5, "users__tier": "gold"},
         "feature_sets": {"users_v1": {"status": "present", "ts": "2024-02-15T00:00:00.000001+00:00"}}},
        {"entity": {"user_id": "nobody"}, "values": {"users__x": None, "users__tier": None},
         "feature_sets": {"users_v1": {"status": "not_found", "ts": None}}},
        {"entity": {"user_id": "u3"}, "values": {"users__x": None, "users__tier": None},
         "feature_sets": {"users_v1": {"status": "expired", "ts": "2024-02-15T00:00:00+00:00"}}},
    ]
    payload = json.loads(body("r1", "model", MATERIALIZED_AT, ["users__x", "users__tier"], rows))
    assert payload == {"request_id": "r1", "retrieval_spec": "model", "at": "2024-02-19T23:59:59.999999+00:00",
                       "features": ["users__x", "users__tier"], "rows": rows}


def test_request_fields_and_request_features_come_after_the_keys_and_the_fetched_values() -> None:
    found = [SetValues(FeatureSelection(USERS, ("x",), ("x",)), ts_micros=np.array([TS, -1]),
                       expired=np.array([False, False]), columns={"x": [2.0, None]})]
    keys = [KeyColumn("user_id", "string"), KeyColumn("amount", "float64")]  # the key, then the request field
    rows = feature_rows(keys, {"user_id": ["u1", "nobody"], "amount": [5.0, None]}, found, {"ratio": [2.5, None]})
    assert [row["entity"] for row in rows] == [{"user_id": "u1", "amount": 5.0}, {"user_id": "nobody", "amount": None}]
    assert [list(row["values"].items()) for row in rows] == [[("x", 2.0), ("ratio", 2.5)], [("x", None), ("ratio", None)]]


def test_ts_text_is_what_datetime_isoformat_writes() -> None:
    """Formatted by NumPy for the whole column (or kept from an earlier call), equal to a
    datetime's isoformat per value: with and without a fraction of a second, from the epoch to
    year 9999."""
    rng = np.random.default_rng(15)
    micros = rng.integers(0, 253_402_300_799_999_999, 20_000)
    micros[::2] -= micros[::2] % 1_000_000  # whole seconds: no fraction written
    micros[:4] = [0, 1, 999_999, 253_402_300_799_999_999]
    expected = [micros_to_datetime(m).isoformat() for m in micros.tolist()]
    assert iso_times(micros) == expected
    # Again, some texts now kept from the first call and some new: the same texts, in order.
    again = np.concatenate([micros[:50], micros[4:54] - 1_000_000, micros[:3]])
    assert iso_times(again) == expected[:50] + [micros_to_datetime(m - 1_000_000).isoformat()
                                                for m in micros[4:54].tolist()] + expected[:3]
    assert iso_times(micros[7:8]) == expected[7:8] and iso_times(micros[:0]) == []

