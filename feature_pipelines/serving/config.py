"""How a feature server runs: what `featurestore serve` was given, passed to every worker."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The settings of the parent process, for workers started by uvicorn (`--workers N`).
CONFIG_ENV = "FEATURESTORE_SERVE_CONFIG"
TOKENS_ENV = "FEATURESTORE_SERVE_TOKENS"


@dataclass(frozen=True)
class ServeConfig:
    redis_url: str
    feature_defs_dir: Path
    host: str = "127.0.0.1"
    port: int = 6566
    workers: int = 1
    tokens_file: Path | None = None
    tokens: str | None = None  # entries as in a tokens file (FEATURESTORE_SERVE_TOKENS)
    max_entities: int = 1000
    max_body_bytes: int = 1 << 20
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    redis_timeout_s: float = 2.0  # per Redis call: a hung Redis answers 503 after this

    @property
    def loopback(self) -> bool:
        """Whether the server binds to loopback only, unreachable from other machines."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def to_json(self) -> str:
        data = asdict(self)
        data["feature_defs_dir"] = str(self.feature_defs_dir)
        data["tokens_file"] = None if self.tokens_file is None else str(self.tokens_file)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        data = json.loads(text)
        data["feature_defs_dir"] = Path(data["feature_defs_dir"])
        data["tokens_file"] = None if data["tokens_file"] is None else Path(data["tokens_file"])
        data["cors_origins"] = tuple(data["cors_origins"])
        return cls(**data)

    @classmethod
    def from_env(cls) -> "ServeConfig":
        """The configuration the parent process left for this worker."""
        return cls.from_json(os.environ[CONFIG_ENV])
