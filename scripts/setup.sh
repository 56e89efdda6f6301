#!/usr/bin/env bash
# Install everything the project needs on a fresh machine: Java (for Spark), redis-server,
# and a virtualenv with the package; with --test also what only the tests use: Chromium (the
# test of the Dagster UI) and the PostgreSQL server (Dagster's production storage in the
# scale-out test). scripts/test.sh asks for it. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ "${1:-}" = "--test" ]; then
  # Debian's Chromium: Playwright drives this system browser (it never downloads one).
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  # The server binaries only (initdb, postgres); the test starts its own server as needed.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need_apt[*]}; install them (sudo apt-get install ${need_apt[*]}) and re-run" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start a system Redis on 6379 and a PostgreSQL on 5432; the project and
  # its tests start their own, so stop them.
  if command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import feature_pipelines, pytest, hypothesis" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test,bench]"
  touch .venv/.installed
fi
