#!/usr/bin/env bash
# One command from a fresh clone to a working local feature store: installs what is missing,
# generates the sample data (60 days up to yesterday), backfills every feature set in Dagster
# runs, publishes online, and prints a summary and the next commands (with the two lines that
# make `featurestore` and `dagster` work in your shell). Extra arguments go to `featurestore demo`
# (e.g. --scale 1000000, --end 2024-02-29 to pin the sample's last day, or --verbose to print
# Dagster's full run logs, which the instance keeps anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s "$PWD/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/featurestore demo "$@"
