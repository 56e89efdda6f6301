"""`featurestore serve` refuses what it cannot serve safely, in one line, before binding anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from feature_pipelines.cli.commands import main
from feature_pipelines.serving.config import ServeConfig
from tests.helpers import PROJECT_DIR

# Nothing listens there: each case is refused before the server would connect.
ENV = {"REDIS_URL": "redis://127.0.0.1:1/0", "FEATURESTORE_PROJECT_DIR": str(PROJECT_DIR),
       "FEATURESTORE_SERVE_TOKENS": None, "FEATURESTORE_SERVE_TOKENS_FILE": None}


@pytest.mark.parametrize("args, env, message", [
    (["--host", "0.0.0.0"], {}, "refusing to serve on 0.0.0.0 without tokens: anyone who can reach it would read "
                                "every feature. Configure tokens"),
    (["--host", "10.1.2.3"], {}, "refusing to serve on 10.1.2.3 without tokens"),
    ([], {"FEATURESTORE_SERVE_TOKENS": "ops plain-token-not-a-hash"},
     "FEATURESTORE_SERVE_TOKENS, line 1: token 'ops' has no SHA-256"),
    (["--tokens-file", "/nonexistent/tokens"], {}, "tokens file /nonexistent/tokens cannot be read"),
])
def test_refused_in_one_line(args: list[str], env: dict, message: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "1", *args], env={**ENV, **env})
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.1", False), ("features.internal", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert ServeConfig("redis://x:1/0", Path("defs"), host=host).loopback is loopback


def test_config_reaches_workers_unchanged() -> None:
    config = ServeConfig("redis://:pw@h:1/0", Path("/defs"), host="::1", port=7, workers=3, tokens_file=Path("/t"),
                         tokens="a " + "0" * 64, max_entities=5, max_body_bytes=9, cors_origins=("https://x",),
                         drain_timeout_s=1.5, redis_timeout_s=0.5)
    assert ServeConfig.from_json(config.to_json()) == config
