"""`POST /push/{source}`: events of a streamed source, appended to its event log for the stream
processor, through the same `Pusher` as `FeatureStore.push`.

    {"events": [{"transaction_id": "t1", "account_id": "a000000", ..., "event_time": "2024-03-01T12:00:00+00:00"}]}
    -> {"request_id": "...", "source": "transactions", "accepted": 1}

Tokens as for the other endpoints (a token may be limited to some push sources, `push:<source>`).
404 for a source no feature set reads, 409 for one no feature set streams (naming the sets that
could opt in), 422 naming `events[i].column` for a bad event (nothing of the push is appended),
503 naming Redis when the log cannot take the events (down, or full because the processor is behind).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from feature_pipelines.errors import EventError, EventLogError
from feature_pipelines.serving.logs import SERVER_LOGGER
from feature_pipelines.serving.requests import RequestError, check_fields
from feature_pipelines.serving.responses import dump
from feature_pipelines.streaming.log import RedisStreamLog, max_entries_from_env
from feature_pipelines.streaming.push import Pusher
from feature_pipelines.streaming.sources import NotStreamedError, PushSources, UnknownSourceError

if TYPE_CHECKING:
    from feature_pipelines.serving.app import FeatureServer

log = logging.getLogger(SERVER_LOGGER)
JSON = "application/json"
ENDPOINT = "/push/{source}"  # as metrics name it


class PushEndpoint:
    """The push endpoint of one server: its authentication, body limits, errors and metrics."""

    def __init__(self, server: "FeatureServer", pusher: Pusher):
        self.server = server
        self.pusher = pusher

    @classmethod
    def of(cls, server: "FeatureServer") -> "PushEndpoint":
        """Pushing to the event logs in the server's Redis, for the streamed sources of its catalog."""
        online = server.online
        return cls(server, Pusher(PushSources(server.served.catalog),
                                  RedisStreamLog(online.client, online.url, max_entries_from_env())))

    async def handle(self, request: Request) -> Response:
        try:
            return self._push(request, await self._body(request))
        except RequestError as exc:
            return self.server.error(request, exc.status, exc.message, exc.field)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request.state.request_id})
            return self.server.error(request, 500, "unexpected error; the server's log holds its traceback under this "
                                                   "request id")

    async def _body(self, request: Request) -> dict:
        """The checked request: token, source, then the body (as `/features/{retrieval_spec}` does)."""
        name = request.path_params["source"]
        token = self.server._authenticate(request)
        try:
            self.pusher.sources.get(name)
        except UnknownSourceError as exc:
            raise RequestError(404, str(exc), "source") from exc
        except NotStreamedError as exc:
            raise RequestError(409, str(exc), "source") from exc
        if token is not None and not token.may_push(name):
            allowed = sorted(token.sources or ())
            raise RequestError(403, f"token {token.name!r} may not push to source {name!r}; it may push to "
                                    f"{allowed or 'no source'}", "source")
        data = await self.server._json(request)
        check_fields(data, ("events",), ("events",))
        return data

    def _push(self, request: Request, data: dict) -> Response:
        name = request.path_params["source"]
        metrics = self.server.metrics
        try:
            # On the event loop, as lookups are: one MULTI/EXEC (and a length check) in Redis.
            accepted = self.pusher.push(name, data["events"])
        except EventError as exc:
            metrics.pushes_refused[(name, "invalid")] += 1
            raise RequestError(422, str(exc), exc.field) from exc
        except EventLogError as exc:  # Redis down, or the log full (the processor behind)
            metrics.pushes_refused[(name, "unavailable")] += 1
            raise RequestError(503, str(exc)) from exc
        metrics.events_pushed[name] += accepted
        return Response(dump({"request_id": request.state.request_id, "source": name, "accepted": accepted}),
                        media_type=JSON)
