"""Request bodies of the feature server, checked field by field.

Bad input is the client's error: `RequestError` carries the HTTP status and the field it is
about (`entities[3].account_id`), and the server answers it as JSON. Nothing here raises
anything else on any JSON a client can send.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feature_pipelines.clock import parse_time
from feature_pipelines.errors import FeatureStoreError, RequestFieldError, one_sentence_end

_INT_RANGE = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}


class RequestError(Exception):
    """A request the server refuses: HTTP `status`, a message, and the field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(one_sentence_end(message))
        self.status = status
        self.field = field

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class KeyColumn:
    """An entity key column a request must give, and its declared type."""

    name: str
    dtype: str


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise RequestError(400, f"the body is not valid JSON ({exc}); send an object like "
                                '{"entities": [{"account_id": "a000001"}]}', "body") from exc
    except RecursionError as exc:  # nesting deeper than Python's recursion limit
        raise RequestError(400, "the body nests JSON too deeply; send an object like "
                                '{"entities": [{"account_id": "a000001"}]}', "body") from exc
    if not isinstance(data, dict):
        raise RequestError(400, f"the body is a JSON {_kind(data)}, not an object; send an object like "
                                '{"entities": [{"account_id": "a000001"}]}', "body")
    return data


def check_fields(body: dict[str, Any], allowed: Sequence[str], required: Sequence[str]) -> None:
    """No field outside `allowed`, every field of `required`."""
    for name in body:
        if name not in allowed:
            raise RequestError(422, f"{name!r} is not a field of this request; its fields are {list(allowed)}", name)
    for name in required:
        if name not in body:
            raise RequestError(422, f"the body has no {name!r}; add it", name)


def entity_columns(entities: Any, keys: Sequence[KeyColumn], limit: int,
                   fields: Sequence[KeyColumn] = ()) -> dict[str, list]:
    """The `entities` list (objects of exactly the key columns, each of its declared type, and the
    request fields of the spec's request features, values checked when they are computed) as one
    list per key column and request field, in order."""
    if not isinstance(entities, list):
        raise RequestError(422, f"entities is a JSON {_kind(entities)}, not a list of objects of the key columns "
                                f"{[k.name for k in keys]}", "entities")
    if len(entities) > limit:
        raise RequestError(422, f"entities lists {len(entities)} entities, more than the limit of {limit} per request; "
                                "split the request (the server's --max-entities sets the limit)", "entities")
    names = [k.name for k in keys]
    field_names = [f.name for f in fields]
    wanted = {*names, *field_names}
    columns: dict[str, list] = {name: [] for name in [*names, *field_names]}
    for i, entity in enumerate(entities):
        where = f"entities[{i}]"
        if not isinstance(entity, dict):
            raise RequestError(422, f"{where} is a JSON {_kind(entity)}, not an object of the key columns {names}", where)
        if entity.keys() != wanted:
            missing = [n for n in names if n not in entity]
            if missing:
                raise RequestError(422, f"{where} lacks key column {missing[0]!r}; this request's key columns are {names}",
                                   f"{where}.{missing[0]}")
            lacking = next((f for f in fields if f.name not in entity), None)
            if lacking is not None:
                raise RequestError(422, f"{where} lacks request field {lacking.name!r} ({lacking.dtype}, null allowed), "
                                        "which this spec's request features read; add it", f"{where}.{lacking.name}")
            extra = next(n for n in entity if n not in wanted)
            also = f" and its request fields are {field_names}" if field_names else ""
            raise RequestError(422, f"{where}: {extra!r} is not a key column of this request; its key columns are "
                                    f"{names}{also}", f"{where}.{extra}")
        for key in keys:
            value = entity[key.name]
            if not _fits(value, key.dtype):
                raise RequestError(422, f"{where}.{key.name} must be {_expected(key.dtype)}, not {_shown(value)}",
                                   f"{where}.{key.name}")
            columns[key.name].append(value)
        for name in field_names:
            columns[name].append(entity[name])
    return columns


def field_error(exc: RequestFieldError) -> RequestError:
    """A request field value of the wrong type (found as the request features read it), as a 422."""
    where = f"entities[{exc.row}].{exc.field}"
    return RequestError(422, f"{where} must be {exc.expected.replace('a ', 'a JSON ', 1)}, not {_shown(exc.value)}", where)


def feature_refs(features: Any) -> tuple[str, ...]:
    """The `features` list of an ad-hoc request: `feature_set:version:feature` strings."""
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise RequestError(422, "features must be a non-empty list of 'feature_set:version:feature' strings, "
                                "e.g. [\"transactions:1:amount_sum_7d\"]", "features")
    return tuple(features)


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(422, f"{name} must be true or false, not {_shown(value)}", name)
    return value


def instant(value: Any) -> datetime | None:
    """The optional `at`: judge value ages at this ISO time with a zone instead of now."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(422, f"at must be an ISO 8601 time with a zone, e.g. \"2024-03-01T00:00:00+00:00\", "
                                f"not {_shown(value)}", "at")
    try:
        return parse_time(value, "at")
    except FeatureStoreError as exc:
        raise RequestError(422, str(exc), "at") from exc


def _fits(value: Any, dtype: str) -> bool:
    if dtype == "string":
        return isinstance(value, str)
    if type(value) is not int:  # bool is an int in Python, not in a key column
        return False
    low, high = _INT_RANGE[dtype]
    return low <= value <= high


def _expected(dtype: str) -> str:
    return "a JSON string" if dtype == "string" else f"a JSON integer ({dtype})"


def _shown(value: Any) -> str:
    """A client's value in a message: as JSON, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)
