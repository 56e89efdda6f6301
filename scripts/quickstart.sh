#!/usr/bin/env bash
# One command from a fresh clone to a working local feature store: installs what is missing,
# generates the sample data (60 days up to yesterday), backfills every feature set in Dagster
# runs, publishes online, and prints a summary. Extra arguments go to `featurestore demo`
# (e.g. --scale 1000000, or --end 2024-02-29 to pin the sample's last day).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s "$PWD/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/featurestore demo "$@"
