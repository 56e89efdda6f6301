"""The feature server's import path stays light: it starts without Spark, Dagster, Delta or pandas."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import PROJECT_DIR

HEAVY = ["pyspark", "py4j", "dagster", "deltalake", "pandas", "pyarrow"]


def test_the_server_imports_none_of_the_heavy_packages() -> None:
    """In a fresh interpreter, as `featurestore serve` starts: the app, the server and the spec
    loaders (a feature definition file may still import pyspark itself; the examples' merchants.py does)."""
    code = ("import json, sys\n"
            "import feature_pipelines.serving.server, feature_pipelines.serving.app\n"
            "from feature_pipelines.spec.catalog import load_catalog\n"
            "from feature_pipelines.spec.retrieval_spec import load_retrieval_specs\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []
