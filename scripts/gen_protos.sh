#!/usr/bin/env bash
# Regenerates the Python code (messages, gRPC stubs, typed .pyi stubs) for every proto under
# protos/ into gen/python. Generated code lives only there and is never edited by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=gen/python
rm -rf "$OUT/annocloud"
mkdir -p "$OUT"
mapfile -t FILES < <(cd protos && find annocloud -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I protos \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy \
  --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc \
  "${FILES[@]}" 2>&1 | grep -v "^Writing mypy" || true
# Regular packages (with __init__.py) so mypy and setuptools find them without namespace tricks.
find "$OUT/annocloud" -type d -exec touch {}/__init__.py \;
touch "$OUT/annocloud/py.typed"
