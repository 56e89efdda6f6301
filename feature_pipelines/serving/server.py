"""Run the feature server: uvicorn, one or more worker processes, JSON logs, a graceful stop.

Everything a user can get wrong (tokens, an open bind without them, definitions) is checked
before the socket opens, so `featurestore serve` fails with one line instead of a traceback.
On SIGTERM (or Ctrl-C) the server stops accepting connections, lets the requests in flight
finish (up to `drain_timeout_s`), closes Redis and exits 0.
"""

from __future__ import annotations

import logging
import logging.config
import os
import signal
from typing import Any

import uvicorn

from feature_pipelines.errors import ServeConfigError
from feature_pipelines.serving.app import create_app
from feature_pipelines.serving.config import CONFIG_ENV, ServeConfig
from feature_pipelines.serving.logs import SERVER_LOGGER, log_config
from feature_pipelines.serving.specs import ServedCatalog
from feature_pipelines.serving.tokens import load_tokens

log = logging.getLogger(SERVER_LOGGER)


def serve(config: ServeConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    tokens = load_tokens(config.tokens_file, config.tokens)
    if not len(tokens) and not config.loopback:
        raise ServeConfigError(
            f"refusing to serve on {config.host} without tokens: anyone who can reach it would read every feature. "
            "Configure tokens (--tokens-file, or FEATURESTORE_SERVE_TOKENS; see README, Serving) or serve on 127.0.0.1.")
    served = ServedCatalog.load(config.feature_defs_dir)
    logging.config.dictConfig(log_config())
    if not len(tokens):
        log.warning(f"no tokens configured: serving without authentication, on loopback only ({config.host})")
    options: dict[str, Any] = dict(
        host=config.host, port=config.port, log_config=log_config(), access_log=False, server_header=False,
        timeout_graceful_shutdown=config.drain_timeout_s, lifespan="on",
    )
    if config.workers == 1:
        app = create_app(config, served, tokens)
        _exit_after_draining()
        uvicorn.run(app, **options)
        return
    # Each worker is a new process: it gets the configuration from the environment and loads
    # the definitions again (checked above, so they load).
    os.environ[CONFIG_ENV] = config.to_json()
    _exit_after_draining()
    uvicorn.run("feature_pipelines.serving.app:app_from_env", factory=True, workers=config.workers, **options)


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _exit_after_draining() -> None:
    """uvicorn handles SIGTERM and SIGINT itself while it serves (stop accepting, drain), then
    re-raises the signal to the handler that was there before it: this one, so a drained server
    exits 0 rather than dying by the signal. Before uvicorn takes over, it stops at once."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
