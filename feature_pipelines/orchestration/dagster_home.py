"""The local Dagster instance: `DAGSTER_HOME`, defaulting to `<project>/.dagster_home`."""

from __future__ import annotations

import os
from pathlib import Path

from feature_pipelines.settings import project_dir


def ensure_dagster_home() -> Path:
    """Use `DAGSTER_HOME` if set; else make `<project>/.dagster_home` linking the repo's dagster.yaml."""
    configured = os.environ.get("DAGSTER_HOME")
    if configured:
        home = Path(configured)
        home.mkdir(parents=True, exist_ok=True)
        return home
    root = project_dir()
    home = root / ".dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists() and (root / "dagster.yaml").exists():
        link.symlink_to(root / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
