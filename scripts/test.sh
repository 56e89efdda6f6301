#!/usr/bin/env bash
# Install what is missing, then run the whole test suite. `.ci/run` calls exactly this.
# Extra arguments go to pytest (e.g. -m "not integration", -k rolling).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
