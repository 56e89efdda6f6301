"""The feature server's ASGI application (Starlette), over the online store.

    POST /features/{retrieval_spec}   {"entities": [{key: value, ...}, ...], "at": optional ISO time}
    POST /features                    {"features": ["set:version:feature", ...], "entities": [...], "full_names": false}
    GET  /health  /ready  /metrics  /openapi.json  /docs

Values are read by `stores.online.lookup.lookup`, the code behind `FeatureStore.get_online_features`,
so the server answers exactly what the Python API does. Every answer is JSON (`/metrics`: text);
bad input is a 4xx naming the field, never a 500; Redis down is a 503 naming its URL, and the
next request after it is back is served again (the client reconnects).
"""

from __future__ import annotations

import gc
import logging
import re
from collections import ChainMap, Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import wraps
from random import getrandbits
from time import perf_counter
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Match, Route

from feature_pipelines.errors import (
    FeatureStoreError,
    OnlineStoreError,
    RequestFeatureError,
    RequestFieldError,
    inline,
)
from feature_pipelines.serving.config import ServeConfig
from feature_pipelines.serving.logs import SERVER_LOGGER, AccessLog
from feature_pipelines.serving.lookups import BatchedLookups
from feature_pipelines.serving.metrics import Metrics
from feature_pipelines.serving.openapi import DOCS_PAGE, openapi_document
from feature_pipelines.serving.requests import (
    RequestError,
    check_fields,
    entity_columns,
    feature_refs,
    field_error,
    flag,
    instant,
    parse_json,
)
from feature_pipelines.serving.responses import body, dump, error_body, feature_rows
from feature_pipelines.serving.specs import Served, ServedCatalog
from feature_pipelines.serving.push import ENDPOINT as PUSH_ENDPOINT, PushEndpoint
from feature_pipelines.serving.tokens import Token, TokenTable, load_tokens
from feature_pipelines.stores.online.lookup import SetValues
from feature_pipelines.stores.online.redis_store import RedisOnlineStore

log = logging.getLogger(SERVER_LOGGER)
JSON = "application/json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ENDPOINTS = {"/health", "/ready", "/metrics", "/features", "/openapi.json", "/docs"}
Endpoint = Callable[["FeatureServer", Request], Awaitable[Response]]


def _answered(handler: Endpoint) -> Endpoint:
    """Turn a refused request into its JSON error, and anything unexpected into a logged 500."""

    @wraps(handler)
    async def endpoint(self: "FeatureServer", request: Request) -> Response:
        try:
            return await handler(self, request)
        except RequestError as exc:
            return self.error(request, exc.status, exc.message, exc.field)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request.state.request_id})
            return self.error(request, 500, "unexpected error; the server's log holds its traceback under this "
                                            "request id")

    return endpoint


class FeatureServer:
    """The endpoints, over the served definitions, the tokens and the online store."""

    def __init__(self, config: ServeConfig, served: ServedCatalog, tokens: TokenTable, online: RedisOnlineStore):
        self.config = config
        self.served = served
        self.tokens = tokens
        self.online = online
        self.lookups = BatchedLookups(online, config.max_entities)
        self.metrics = Metrics()
        self._openapi: bytes | None = None

    # --- features ---------------------------------------------------------------------------

    @_answered
    async def spec_features(self, request: Request) -> Response:
        name = request.path_params["retrieval_spec"]
        token = self._authenticate(request)
        served = self.served.specs.get(name)
        if served is None:
            known = sorted(self.served.specs) or "none"
            raise RequestError(404, f"retrieval spec {name!r} is not served; the served specs are {known} "
                                    "(files in feature_defs/retrieval_specs/)", "retrieval_spec")
        if token is not None and not token.allows(name):
            raise RequestError(403, f"token {token.name!r} may not read retrieval spec {name!r}; it may read "
                                    f"{sorted(token.specs or ())}", "retrieval_spec")
        data = await self._json(request)
        check_fields(data, ("entities", "at"), ("entities",))
        return await self._answer(request, served, data)

    @_answered
    async def adhoc_features(self, request: Request) -> Response:
        token = self._authenticate(request)
        if token is not None and not token.allows(None):
            raise RequestError(403, f"token {token.name!r} is limited to the retrieval specs {sorted(token.specs or ())}; "
                                    "explicit feature lists need a token without that limit", "features")
        data = await self._json(request)
        check_fields(data, ("features", "entities", "full_names", "at"), ("features", "entities"))
        refs = feature_refs(data["features"])
        try:
            served = self.served.adhoc(refs, flag(data.get("full_names", False), "full_names"))
        except FeatureStoreError as exc:
            raise RequestError(422, str(exc), "features") from exc
        return await self._answer(request, served, data)

    async def _answer(self, request: Request, served: Served, data: dict[str, Any]) -> Response:
        entities = entity_columns(data["entities"], served.keys, self.config.max_entities, served.fields)
        count = len(next(iter(entities.values()), ()))
        request.state.entities = count
        try:
            # On the event loop, not in a thread: the hop to a thread and back cost more than the
            # Redis round trip itself (BENCHMARKS.md, Feature server). The price: while Redis
            # hangs, this worker answers nothing else (up to its timeout, redis_timeout_s).
            # Batched with the concurrent requests for the same features (serving/lookups.py).
            found, at = await self.lookups.lookup(served, entities, count, instant(data.get("at")))
        except OnlineStoreError as exc:
            self.metrics.redis_errors += 1
            raise RequestError(503, str(exc)) from exc
        self.metrics.entities += count
        for values in found:
            key = values.selection.feature_set.key
            for status, times in Counter(values.statuses()).items():
                self.metrics.statuses[(key, status)] += times
        computed = self._request_features(request, served, entities, found)
        rows = feature_rows((*served.keys, *served.fields), entities, found, computed)
        return Response(body(request.state.request_id, served.name, at, served.columns, rows), media_type=JSON)

    def _request_features(self, request: Request, served: Served, entities: dict[str, list],
                          found: list[SetValues]) -> dict[str, list]:
        """The spec's request features, by `RequestFeatures.apply` as get_online_features computes
        them. A function that fails is a bug in its definition: the one 500 the server answers on purpose."""
        if not served.request:
            return {}
        try:
            return served.request.apply(ChainMap(*(values.columns for values in reversed(found)), entities))
        except RequestFieldError as exc:
            raise field_error(exc) from exc
        except RequestFeatureError as exc:
            self.metrics.request_feature_errors += 1
            log.error(str(exc), extra={"request_id": request.state.request_id})
            raise RequestError(500, str(exc), "request_features") from exc

    # --- operations -------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"up"}', media_type=JSON)

    @_answered
    async def ready(self, request: Request) -> Response:
        self._authenticate(request)
        try:
            await run_in_threadpool(self.online.client.ping)
        except redis.RedisError as exc:
            self.metrics.redis_errors += 1
            raise RequestError(503, f"Redis {self.online.shown_url} is unreachable: {inline(exc)}; the server answers "
                                    "again as soon as it is back") from exc
        return Response(dump({"status": "ready", "redis": self.online.shown_url,
                              "retrieval_specs": sorted(self.served.specs),
                              "feature_sets": [fs.key for fs in self.served.catalog]}), media_type=JSON)

    @_answered
    async def prometheus(self, request: Request) -> Response:
        self._authenticate(request)
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    @_answered
    async def openapi(self, request: Request) -> Response:
        self._authenticate(request)
        if self._openapi is None:
            self._openapi = dump(openapi_document(self.served, self.config.max_entities, secured=bool(len(self.tokens))))
        return Response(self._openapi, media_type=JSON)

    @_answered
    async def docs(self, request: Request) -> Response:
        self._authenticate(request)
        return HTMLResponse(DOCS_PAGE)

    # --- parts ------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> Token | None:
        """The request's token; None when the server has no tokens. 401 without a valid one."""
        if not len(self.tokens):
            return None
        header = request.headers.get("authorization")
        token = self.tokens.authenticate(header)
        if token is None:
            raise RequestError(401, "this server needs a token: send `Authorization: Bearer <token>`" if not header
                               else "the token is not valid; send `Authorization: Bearer <token>` with a configured token",
                               "authorization")
        request.state.token = token.name
        return token

    async def _json(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object; 413 past the size limit (read no further than it)."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"the body has {declared} bytes, more than the limit of {limit}; send fewer "
                                    "entities per request (the server's --max-body-bytes sets the limit)", "body")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is larger than the limit of {limit} bytes; send fewer entities per "
                                        "request (the server's --max-body-bytes sets the limit)", "body")
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    def error(self, request: Request, status: int, message: str, field: str | None = None) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return Response(error_body(request.state.request_id, status, message, field), status_code=status,
                        media_type=JSON, headers=headers)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (no such path, wrong method), as JSON."""
        assert isinstance(exc, HTTPException)
        message = {404: f"no endpoint {request.url.path}; see /docs", 405: f"{request.method} is not allowed on "
                   f"{request.url.path}"}.get(exc.status_code, str(exc.detail))
        return self.error(request, exc.status_code, message)


class Observed:
    """ASGI middleware: a request id on every request and response (`X-Request-ID`, the client's
    own when it sends a sane one), metrics, and one JSON access log line per request."""

    def __init__(self, app: Any, metrics: Metrics, access: AccessLog):
        self.app = app
        self.metrics = metrics
        self.access = access

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        # 128 random bits from the process's generator: unique like a uuid4, without its getrandom syscall.
        request_id = given if _REQUEST_ID.match(given) else f"{getrandbits(128):032x}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight -= 1
            elapsed = perf_counter() - start
            path = scope["path"]
            endpoint = path if path in _ENDPOINTS else "/features/{retrieval_spec}" if path.startswith("/features/") \
                else PUSH_ENDPOINT if path.startswith("/push/") \
                else "other"
            self.metrics.observe(endpoint, status, elapsed)
            client = scope.get("client")
            self.access.write(f"{scope['method']} {path} {status}", {
                "request_id": request_id, "method": scope["method"], "path": path, "status": status,
                "duration_ms": round(elapsed * 1000, 3), "client": client[0] if client else None,
                "token": state.get("token"), "entities": state.get("entities")})


class Shortcut:
    """ASGI middleware, the innermost: a request for one of `routes` (Starlette's own, matched as
    its router matches them) goes straight to the route's endpoint, past Starlette's exception
    middleware, router and per-route wrappers: about 5 us of a one-entity request's CPU in process,
    11 us over HTTP under load (BENCHMARKS.md, Feature server). What those layers do, the endpoints
    do themselves (`_answered` turns every error into its JSON answer). Anything else, a wrong
    method on these paths included (405), goes through Starlette."""

    def __init__(self, app: Any, routes: Sequence[Route]):
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    response = await route.endpoint(Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(config: ServeConfig, served: ServedCatalog | None = None, tokens: TokenTable | None = None) -> Starlette:
    """The application; loads the definitions and tokens unless given."""
    served = served or ServedCatalog.load(config.feature_defs_dir)
    tokens = tokens if tokens is not None else load_tokens(config.tokens_file, config.tokens)
    online = RedisOnlineStore.from_url(config.redis_url, socket_timeout=config.redis_timeout_s, retries=1)
    server = FeatureServer(config, served, tokens, online)
    access = AccessLog()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(online.client.ping)
            reached = "reachable"
        except redis.RedisError as exc:
            reached = f"unreachable ({inline(exc)}); /ready answers 503 until it is up"
        log.info(f"serving {len(served.specs)} retrieval spec(s) and {len(served.catalog)} feature set(s) from "
                 f"Redis {online.shown_url} ({reached})",
                 extra={"retrieval_specs": sorted(served.specs), "tokens": len(tokens)})
        # What is loaded by now (modules, definitions) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it (13 ms each, a request's p99).
        gc.freeze()
        yield
        access.flush()  # the lines of the requests drained on SIGTERM
        online.client.close()

    middleware = [Middleware(Observed, metrics=server.metrics, access=access)]
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type",
                                                                                   "X-Request-ID"],
                                     expose_headers=["X-Request-ID"]))
    hot = [  # the routes the Shortcut takes
        Route("/features/{retrieval_spec}", server.spec_features, methods=["POST"]),
        Route("/features", server.adhoc_features, methods=["POST"]),
    ]
    middleware.append(Middleware(Shortcut, routes=hot))
    routes = [
        *hot,
        Route("/health", server.health, methods=["GET"]),
        Route("/ready", server.ready, methods=["GET"]),
        Route("/metrics", server.prometheus, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        Route("/docs", server.docs, methods=["GET"]),
        Route("/push/{source}", PushEndpoint.of(server).handle, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={HTTPException: server.http_error})


def app_from_env() -> Starlette:
    """The application of a worker started by uvicorn (`--workers N`), configured by its parent."""
    return create_app(ServeConfig.from_env())
