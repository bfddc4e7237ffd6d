#!/usr/bin/env bash
# Fails when the committed generated code differs from what the protos generate, or buf lint fails.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=.cache/tools/node_modules/.bin/buf
"$BUF" lint
"$BUF" format --diff --exit-code
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp -r gen "$TMP/committed"
bash scripts/gen_protos.sh
if ! diff -r "$TMP/committed" gen >/dev/null; then
  diff -r "$TMP/committed" gen | head -20
  rm -rf gen && cp -r "$TMP/committed" gen
  echo "protos-check: generated code is stale; run 'make protos' and commit the result" >&2
  exit 1
fi
echo "protos-check: buf lint clean, generated code up to date"
