"""Request bodies: every bad one is a RequestError with its status and the field it is about."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import pytest

from feature_pipelines.errors import RequestFieldError
from feature_pipelines.serving.requests import (
    KeyColumn,
    RequestError,
    check_fields,
    entity_columns,
    feature_refs,
    field_error,
    instant,
    parse_json,
)

KEYS = (KeyColumn("account_id", "string"), KeyColumn("merchant_id", "string"), KeyColumn("shard", "int32"))


def test_entities_become_key_columns_in_order() -> None:
    entities = [{"account_id": "a1", "merchant_id": "m1", "shard": 3},
                {"shard": -2, "merchant_id": "m2", "account_id": "a2"}]  # key order within an entity is free
    assert entity_columns(entities, KEYS, limit=2) == {"account_id": ["a1", "a2"], "merchant_id": ["m1", "m2"],
                                                       "shard": [3, -2]}
    assert entity_columns([], KEYS, limit=2) == {"account_id": [], "merchant_id": [], "shard": []}


GOOD = {"account_id": "a1", "merchant_id": "m1", "shard": 1}


@pytest.mark.parametrize("entities, field, message", [
    ({"account_id": "a1"}, "entities", "entities is a JSON object, not a list"),
    (None, "entities", "entities is a JSON null"),
    ([GOOD] * 3, "entities", "entities lists 3 entities, more than the limit of 2 per request"),
    ([GOOD, "a1"], "entities[1]", r"entities\[1\] is a JSON string, not an object"),
    ([{"account_id": "a1", "shard": 1}], "entities[0].merchant_id", "lacks key column 'merchant_id'"),
    ([{**GOOD, "amount": 3}], "entities[0].amount", "'amount' is not a key column"),
    ([{**GOOD, "account_id": 7}], "entities[0].account_id", "must be a JSON string, not 7"),
    ([{**GOOD, "account_id": None}], "entities[0].account_id", "must be a JSON string, not null"),
    ([{**GOOD, "shard": "1"}], "entities[0].shard", 'must be a JSON integer \\(int32\\), not "1"'),
    ([{**GOOD, "shard": True}], "entities[0].shard", "not true"),
    ([{**GOOD, "shard": 1.0}], "entities[0].shard", "not 1.0"),
    ([{**GOOD, "shard": 2**31}], "entities[0].shard", "not 2147483648"),
    ([{**GOOD, "account_id": "x" * 500}], "entities[0].account_id", None),  # fine: keys are any string
])
def test_bad_entities_name_the_field(entities: Any, field: str, message: str | None) -> None:
    if message is None:
        assert entity_columns(entities, KEYS, limit=2)["account_id"] == ["x" * 500]
        return
    with pytest.raises(RequestError, match=message) as caught:
        entity_columns(entities, KEYS, limit=2)
    assert (caught.value.status, caught.value.field) == (422, field)
    assert str(caught.value).endswith(".") and not str(caught.value).endswith("..")


FIELDS = (KeyColumn("amount", "float64"), KeyColumn("channel", "string"))


def test_request_fields_come_with_the_keys_and_may_be_null() -> None:
    entities = [{**GOOD, "amount": 12.5, "channel": "web"}, {**GOOD, "amount": None, "channel": None}]
    assert entity_columns(entities, KEYS, 2, FIELDS) == {"account_id": ["a1", "a1"], "merchant_id": ["m1", "m1"],
                                                         "shard": [1, 1], "amount": [12.5, None], "channel": ["web", None]}


@pytest.mark.parametrize("entity, field, message", [
    ({**GOOD, "channel": "web"}, "entities[0].amount",
     "entities[0] lacks request field 'amount' (float64, null allowed), which this spec's request features read; add it."),
    ({**GOOD, "amount": 1, "channel": "web", "note": "x"}, "entities[0].note",
     "entities[0]: 'note' is not a key column of this request; its key columns are ['account_id', 'merchant_id', "
     "'shard'] and its request fields are ['amount', 'channel']."),
    ({"account_id": "a1", "shard": 1, "amount": 1, "channel": "web"}, "entities[0].merchant_id",
     "lacks key column 'merchant_id'"),  # keys first
])
def test_missing_or_extra_request_fields(entity: dict, field: str, message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)) as caught:
        entity_columns([entity], KEYS, 2, FIELDS)
    assert (caught.value.status, caught.value.field) == (422, field)


def test_a_request_field_of_the_wrong_type_as_a_422() -> None:
    """Field values are checked where the request features read them (`RequestFeatures.apply`), as
    everywhere; its error becomes a 422 naming the entity's field."""
    refused = field_error(RequestFieldError("amount", 3, "12.5", "a number or null"))
    assert (refused.status, refused.field) == (422, "entities[3].amount")
    assert refused.message == 'entities[3].amount must be a JSON number or null, not "12.5".'


def test_long_values_are_cut_short_in_messages() -> None:
    with pytest.raises(RequestError) as caught:
        entity_columns([{**GOOD, "shard": [1] * 1000}], KEYS, limit=2)
    assert len(caught.value.message) < 200 and "…" in caught.value.message


@pytest.mark.parametrize("body, message", [
    (b'{"entities": [', "the body is not valid JSON"),
    (b"", "the body is not valid JSON"),
    (b"\xff\xfe", "the body is not valid JSON"),
    (b"[1, 2]", "the body is a JSON array, not an object"),
    (b"null", "the body is a JSON null, not an object"),
    (b"[" * 100_000 + b"]" * 100_000, "the body nests JSON too deeply"),
])
def test_a_body_must_be_a_json_object(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        parse_json(body)
    assert (caught.value.status, caught.value.field) == (400, "body")


def test_fields_of_a_request() -> None:
    check_fields({"entities": []}, ("entities", "at"), ("entities",))
    with pytest.raises(RequestError, match="'feature' is not a field of this request") as caught:
        check_fields({"entities": [], "feature": 1}, ("entities", "at"), ("entities",))
    assert caught.value.field == "feature"
    with pytest.raises(RequestError, match="the body has no 'entities'") as caught:
        check_fields({}, ("entities", "at"), ("entities",))
    assert caught.value.field == "entities"


def test_feature_lists_and_times() -> None:
    assert feature_refs(["transactions:1:amount_sum_7d"]) == ("transactions:1:amount_sum_7d",)
    for bad in ([], "transactions:1:amount_sum_7d", [1], None):
        with pytest.raises(RequestError, match="features must be a non-empty list"):
            feature_refs(bad)
    assert instant(None) is None
    assert instant("2024-02-19T23:59:59.999999+00:00") == datetime(2024, 2, 19, 23, 59, 59, 999999, tzinfo=timezone.utc)
    for bad, message in (("2024-02-19T00:00:00", "has no time zone"), ("yesterday", "is not an ISO 8601 time"),
                         (5, "at must be an ISO 8601 time with a zone")):
        with pytest.raises(RequestError, match=message) as caught:
            instant(bad)
        assert (caught.value.status, caught.value.field) == (422, "at")
