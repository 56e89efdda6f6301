"""Where things live, from the environment with local defaults.

Every location is one environment variable away from a cluster deployment; nothing else
changes between a laptop and production.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from feature_pipelines.errors import FeatureStoreError, inline

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SERVE_URL = "http://127.0.0.1:6566"  # `featurestore serve` with its defaults
DEFAULT_PUBLISH_RETRY_DELAY = 2.0  # seconds; Redis fail-overs usually finish within the 14 s of three retries


def project_dir() -> Path:
    """The project folder: `FEATURESTORE_PROJECT_DIR`, else the folder holding `feature_defs/`."""
    configured = os.environ.get("FEATURESTORE_PROJECT_DIR")
    if configured:
        return Path(configured).resolve()
    cwd = Path.cwd()
    if (cwd / "feature_defs").is_dir():
        return cwd
    return PACKAGE_DIR.parent


@dataclass(frozen=True)
class Settings:
    feature_defs_dir: Path
    data_dir: Path
    source_root: str
    offline_uri: str
    redis_url: str | None
    spark_master: str
    offline_storage_options: dict[str, str] = field(default_factory=dict)
    source_storage_options: dict[str, str] = field(default_factory=dict)
    # Where the feature server answers, as clients reach it: the dataset assets link there.
    serve_url: str = DEFAULT_SERVE_URL
    # Seconds before the first retry of a failed Redis publish (then doubling, three retries).
    publish_retry_delay: float = DEFAULT_PUBLISH_RETRY_DELAY

    @classmethod
    def from_env(cls) -> "Settings":
        root = project_dir()
        data_dir = Path(os.environ.get("FEATURESTORE_DATA_DIR", root / "data")).resolve()
        return cls(
            feature_defs_dir=Path(os.environ.get("FEATURE_DEFS_DIR", root / "feature_defs")).resolve(),
            data_dir=data_dir,
            source_root=os.environ.get("FEATURESTORE_SOURCE_ROOT", str(data_dir / "sources")),
            offline_uri=os.environ.get("FEATURESTORE_OFFLINE_URI", str(data_dir / "offline")),
            redis_url=os.environ.get("REDIS_URL") or None,
            spark_master=os.environ.get("SPARK_MASTER", "local[2]"),
            offline_storage_options=_json_env("FEATURESTORE_OFFLINE_STORAGE_OPTIONS"),
            source_storage_options=_json_env("FEATURESTORE_SOURCE_STORAGE_OPTIONS"),
            serve_url=_url_env("FEATURESTORE_SERVE_URL", DEFAULT_SERVE_URL),
            publish_retry_delay=_seconds_env("FEATURESTORE_PUBLISH_RETRY_DELAY", DEFAULT_PUBLISH_RETRY_DELAY),
        )


def _json_env(name: str) -> dict[str, str]:
    """A JSON object from the environment (delta-rs storage options), `{}` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FeatureStoreError(f"{name} is not valid JSON ({inline(exc)}); set it to an object like '{{\"AWS_REGION\": \"eu-west-1\"}}'.") from exc
    if not isinstance(value, dict):
        raise FeatureStoreError(f"{name} must be a JSON object of storage options, not {type(value).__name__}.")
    return {str(k): str(v) for k, v in value.items()}


def _url_env(name: str, default: str) -> str:
    """An http(s) URL from the environment, without a trailing slash; `default` when unset."""
    raw = os.environ.get(name, "").strip() or default
    if not raw.startswith(("http://", "https://")):
        raise FeatureStoreError(f"{name} is not an http(s) URL ({raw!r}); set it to where clients reach the feature "
                                f"server, like {default}.")
    return raw.rstrip("/")


def _seconds_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment; `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise FeatureStoreError(f"{name} is {raw!r}; set it to a positive number of seconds, like {default:g}.")
    return value


def resolve_path(root: str, path: str) -> str:
    """Join `path` to `root` unless it is already absolute or a URI."""
    if "://" in path or path.startswith("/"):
        return path
    return f"{root.rstrip('/')}/{path}"
