"""The OpenAPI document the feature server publishes (`/openapi.json`), written from what it
serves: one path per retrieval spec, with its key columns, request fields and features (request
features last), one push path per streamed source with its columns, and the docs page (`/docs`)."""

from __future__ import annotations

from typing import Any

from feature_pipelines.serving.specs import Served, ServedCatalog
from feature_pipelines.streaming.sources import PushSource, PushSources

_JSON_TYPE = {"string": "string", "int64": "integer", "int32": "integer", "float64": "number", "float32": "number",
              "bool": "boolean", "timestamp": "string", "date": "string"}
_ERRORS = {
    "401": "No token, or an unknown one (when tokens are configured).",
    "403": "The token may not read this retrieval spec.",
    "413": "The body is larger than the server's --max-body-bytes.",
    "422": "A field is wrong: `error.field` names it (a missing or extra key column or request field, a wrong type, "
           "too many entities).",
    "503": "Redis cannot be read; the message names its URL.",
}


def openapi_document(served: ServedCatalog, max_entities: int, secured: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {"get": _get("Whether the process is up (never needs a token).", "Up.")},
        "/ready": {"get": _get("Whether the server can answer: definitions loaded and Redis reachable.", "Ready.",
                               {"503": "Redis is unreachable."})},
        "/metrics": {"get": _get("Prometheus metrics: requests, latency histograms, Redis errors.", "Metrics.",
                                 media="text/plain")},
        "/features": {"post": _post(
            "Online features of a list of `feature_set:version:feature` entries for some entities.",
            {"type": "object", "additionalProperties": False, "required": ["features", "entities"], "properties": {
                "features": {"type": "array", "minItems": 1, "items": {"type": "string"},
                             "example": ["transactions:1:amount_sum_7d", "accounts:1:*"]},
                "entities": {"type": "array", "maxItems": max_entities,
                             "items": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}},
                "full_names": {"type": "boolean", "default": False},
                "at": _AT}},
            {"type": ["string", "number", "integer", "boolean", "null"]}, None)},
    }
    for name, spec in sorted(served.specs.items()):
        summary = f"Online features of retrieval spec `{name}`, one row per entity in order."
        if spec.fields:
            summary += (f" Each entity also gives the request fields {', '.join(f'`{f.name}`' for f in spec.fields)} "
                        f"(null allowed), from which the request features "
                        f"{', '.join(f'`{c}`' for c in spec.request.columns)} are computed after the fetched features.")
        paths[f"/features/{name}"] = {"post": _post(
            summary,
            {"type": "object", "additionalProperties": False, "required": ["entities"], "properties": {
                "entities": {"type": "array", "maxItems": max_entities, "items": _entity(spec)}, "at": _AT}},
            _values(spec), name)}
    pushed = PushSources(served.catalog)
    for name in pushed.names():
        paths[f"/push/{name}"] = {"post": _push(pushed.get(name))}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Feature server", "version": "1",
                 "description": "Online features of the feature store, the values `FeatureStore.get_online_features` "
                                "returns, with each feature set's status and ts."},
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR, "FeatureSetStatus": _STATUS}},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
        document["paths"]["/health"]["get"]["security"] = []
    return document


_AT = {"type": "string", "format": "date-time",
       "description": "Judge value ages (temporal_join_lookback) at this time instead of now."}
_ERROR = {"type": "object", "properties": {
    "error": {"type": "object", "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                                               "field": {"type": ["string", "null"]}}},
    "request_id": {"type": "string"}}}
_STATUS = {"type": "object", "properties": {
    "status": {"enum": ["present", "not_found", "expired"]},
    "ts": {"type": ["string", "null"], "format": "date-time",
           "description": "When the value became true (null when not found)."}}}


def _entity(spec: Served) -> dict[str, Any]:
    properties: dict[str, Any] = {k.name: {"type": _JSON_TYPE[k.dtype]} for k in spec.keys}
    for f in spec.fields:
        readers = [b.name for b in spec.request.bound if f.name in b.feature.request]
        properties[f.name] = {"type": [_JSON_TYPE[f.dtype], "null"],
                              "description": f"Request field ({f.dtype}) read by request feature(s) {', '.join(readers)}."}
    return {"type": "object", "additionalProperties": False,
            "required": [k.name for k in spec.keys] + [f.name for f in spec.fields], "properties": properties}


def _values(spec: Served) -> dict[str, Any]:
    properties = {}
    for selection in spec.selections:
        dtypes = {f.name: f.dtype for f in selection.feature_set.features}
        for feature, column in zip(selection.features, selection.columns):
            properties[column] = {"type": [_JSON_TYPE[dtypes[feature]], "null"]}
    for bound in spec.request.bound:
        properties[bound.name] = {"type": [_JSON_TYPE[bound.feature.output], "null"],
                                  "description": f"Request feature {bound.feature!r}: {bound.feature.description}".strip()}
    return {"type": "object", "properties": properties}


def _response(values: dict[str, Any], spec: str | None) -> dict[str, Any]:
    return {"type": "object", "properties": {
        "request_id": {"type": "string"},
        **({} if spec is None else {"retrieval_spec": {"const": spec}}),
        "at": {"type": "string", "format": "date-time"},
        "features": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "object", "properties": {
            "entity": {"type": "object"},
            "values": values if spec is not None else {"type": "object", "additionalProperties": values},
            "feature_sets": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/FeatureSetStatus"}},
        }}}}}


def _post(summary: str, request: dict[str, Any], values: dict[str, Any], spec: str | None) -> dict[str, Any]:
    """A features endpoint: of retrieval spec `spec`, or of an explicit feature list (None)."""
    errors = {code: {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
              for code, text in _ERRORS.items()}
    if spec is None:
        errors["403"]["description"] = "The token is limited to some retrieval specs."
    return {"summary": summary, "operationId": "features" if spec is None else f"features_of_{spec}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {"200": {"description": "One row per entity, in order.",
                                  "content": {"application/json": {"schema": _response(values, spec)}}}, **errors}}


def _push(pushed: PushSource) -> dict[str, Any]:
    """The push endpoint of one streamed source: its events are objects of the source's columns."""
    source = pushed.source
    required = {source.timestamp, *pushed.keys, *([source.event_id] if source.event_id else [])}
    properties = {}
    for column, dtype in source.columns.items():
        schema: dict[str, Any] = {"type": _JSON_TYPE[dtype] if column in required else [_JSON_TYPE[dtype], "null"]}
        if dtype in ("timestamp", "date"):
            schema["format"] = "date-time" if dtype == "timestamp" else "date"
        properties[column] = schema
    event = {"type": "object", "additionalProperties": False, "required": list(source.columns), "properties": properties}
    errors = {
        "401": "No token, or an unknown one (when tokens are configured).",
        "403": "The token may not push to this source.",
        "413": "The body is larger than the server's --max-body-bytes.",
        "422": "An event is wrong: `error.field` names it (`events[3].amount`); nothing of the push was appended.",
        "503": "The event log cannot take the events (Redis down, or the log full: the stream processor is behind); "
               "nothing was appended.",
    }
    sets = ", ".join(f"`{fs.key}`" for fs in pushed.feature_sets)
    return {"summary": f"Append events of source `{source.name}` to its event log, all or none, for the stream "
                       f"processor of {sets}. Each event is identified by its `{source.event_id}`.",
            "operationId": f"push_{source.name}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["events"],
                "properties": {"events": {"type": "array", "items": event}}}}}},
            "responses": {"200": {"description": "How many events were appended.", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"request_id": {"type": "string"},
                                                            "source": {"const": source.name},
                                                            "accepted": {"type": "integer"}}}}}},
                          **{code: {"description": text, "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/Error"}}}} for code, text in errors.items()}}}


def _get(summary: str, ok: str, more: dict[str, str] | None = None, media: str = "application/json") -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": ok, "content": {media: {}}}}
    responses.update({code: {"description": text} for code, text in (more or {}).items()})
    return {"summary": summary, "responses": responses}


DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Feature server</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""
