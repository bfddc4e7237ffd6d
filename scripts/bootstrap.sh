#!/usr/bin/env bash
# Installs what annocloud needs into the repo (idempotent, cached): the Python venv with pinned
# packages and the buf CLI (npm @bufbuild/buf, pinned). Re-runs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
BUF_VERSION=1.75.0
STAMP=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "bootstrap: installing Python packages (pinned in pyproject.toml)"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade "pip==25.3"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$STAMP"
fi
if [ ! -x .cache/tools/node_modules/.bin/buf ]; then
  echo "bootstrap: installing buf $BUF_VERSION from npm"
  mkdir -p .cache/tools
  (cd .cache/tools && npm install --silent --no-audit --no-fund --prefix . "@bufbuild/buf@$BUF_VERSION" >/dev/null)
fi
