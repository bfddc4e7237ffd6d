#!/usr/bin/env bash
# A local Apache Kafka broker (KRaft, single node) for annocloud's cluster mode and tests: jars from
# Maven Central through a pinned Maven project, listening on 127.0.0.1 only. Idempotent; see --help.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/infra/kafka.sh COMMAND

Commands
  fetch     resolve the broker's jars (deploy/local/kafka/pom.xml) into .cache/kafka/libs with Maven;
            does nothing when they are already there for this pom.xml
  start     fetch, write the config, format the storage (first time), start the broker in the
            background, wait until it answers a metadata request; prints the bootstrap address
  stop      stop the broker started from the pidfile (SIGTERM, then SIGKILL after
            $ANNOCLOUD_KAFKA_STOP_TIMEOUT s); does nothing when it is not running
  kill      SIGKILL the broker from the pidfile at once (fault injection); no-op when not running
  restart   stop, then start
  status    print "up" (exit 0) or "down" (exit 3)
  logs      print the last $ANNOCLOUD_KAFKA_LOG_LINES lines of the broker's log (logs -f follows it)
  bootstrap print the bootstrap address (127.0.0.1:<port>)
  clean     stop, then delete this port's state directory (topics, offsets, logs)

Settings (environment)
  ANNOCLOUD_KAFKA_PORT             client listener on 127.0.0.1 (default 19092)
  ANNOCLOUD_KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 19093)
  ANNOCLOUD_INFRA_DIR              where state lives (default .cache/infra, relative to the repo
                                   root); this broker uses <dir>/kafka-<port>/ (data/, logs/,
                                   server.properties, kafka.pid)
  ANNOCLOUD_KAFKA_HEAP             JVM heap flags (default "-Xms256m -Xmx512m")
  ANNOCLOUD_KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 120)
  ANNOCLOUD_KAFKA_STOP_TIMEOUT     seconds to wait for a clean shutdown before SIGKILL (default 30)
  ANNOCLOUD_KAFKA_LOG_LINES        lines shown by `logs` and on errors (default 60)
  ANNOCLOUD_NO_APT=1               never apt-get install a missing java/mvn (just fail)
  JAVA                             the java binary (default: java on PATH; Java 17+)
  MVN                              the mvn binary (default: mvn on PATH)
EOF
}

die() {
  echo "kafka.sh: error: $*" >&2
  exit 1
}
say() { echo "kafka.sh: $*" >&2; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
POM="$REPO_ROOT/deploy/local/kafka/pom.xml"
TEMPLATE="$REPO_ROOT/deploy/local/kafka/server.properties.template"
LOG4J="$REPO_ROOT/deploy/local/kafka/log4j2.properties"
LIBS="$REPO_ROOT/.cache/kafka/libs"
STAMP="$LIBS/.pom.sha256"
PORT=${ANNOCLOUD_KAFKA_PORT:-19092}
CONTROLLER_PORT=${ANNOCLOUD_KAFKA_CONTROLLER_PORT:-19093}
HEAP=${ANNOCLOUD_KAFKA_HEAP:--Xms256m -Xmx512m}
START_TIMEOUT=${ANNOCLOUD_KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${ANNOCLOUD_KAFKA_STOP_TIMEOUT:-30}
LOG_LINES=${ANNOCLOUD_KAFKA_LOG_LINES:-60}
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
INFRA_DIR=${ANNOCLOUD_INFRA_DIR:-.cache/infra}
case "$INFRA_DIR" in
  /*) ;;
  *) INFRA_DIR="$REPO_ROOT/$INFRA_DIR" ;;
esac
BASE="$INFRA_DIR/kafka-$PORT"
DATA="$BASE/data"
LOGS="$BASE/logs"
CONFIG="$BASE/server.properties"
PIDFILE="$BASE/kafka.pid"
SERVER_LOG="$LOGS/server.log"
CONSOLE_LOG="$LOGS/console.log"

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)); }
is_port "$PORT" || die "ANNOCLOUD_KAFKA_PORT=$PORT is not a TCP port"
is_port "$CONTROLLER_PORT" || die "ANNOCLOUD_KAFKA_CONTROLLER_PORT=$CONTROLLER_PORT is not a TCP port"
[ "$PORT" != "$CONTROLLER_PORT" ] || die "ANNOCLOUD_KAFKA_PORT and ANNOCLOUD_KAFKA_CONTROLLER_PORT must differ"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_KAFKA_START_TIMEOUT=$START_TIMEOUT is not a number"
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_KAFKA_STOP_TIMEOUT=$STOP_TIMEOUT is not a number"

# --- fetch --------------------------------------------------------------------------------------

# Java 17+ and Maven come from Debian's packages when missing (as root with apt-get), else a clear error.
need_tools() {
  local missing=() tool
  for tool in "$@"; do
    case "$tool" in
      java) command -v "$JAVA" >/dev/null || missing+=(openjdk-17-jre-headless) ;;
      mvn) command -v "$MVN" >/dev/null || missing+=(maven) ;;
    esac
  done
  ((${#missing[@]} == 0)) && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "${ANNOCLOUD_NO_APT:-0}" != 1 ]; then
    say "installing ${missing[*]} from Debian's packages"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  fi
  command -v "$JAVA" >/dev/null || die "Java ('$JAVA') is not installed: apt-get install -y openjdk-17-jre-headless"
  for tool in "$@"; do
    [ "$tool" != mvn ] || command -v "$MVN" >/dev/null || die "Maven ('$MVN') is not installed: apt-get install -y maven"
  done
}

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

jars_ready() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(pom_hash)" ] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null
}

cmd_fetch() {
  if jars_ready; then
    say "jars cached in ${LIBS#"$REPO_ROOT"/} ($(find "$LIBS" -name '*.jar' | wc -l) jars)"
    return 0
  fi
  need_tools java mvn
  say "resolving the broker's jars from Maven Central ($POM)"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$LIBS")"
  if ! "$MVN" -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
    tail -n 40 "$tmp.log" >&2 || true
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed (log above)"
  fi
  rm -f "$tmp.log"
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "Maven resolved no kafka_2.13 jar into $tmp"
  pom_hash >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars into ${LIBS#"$REPO_ROOT"/}"
}

# --- process helpers ----------------------------------------------------------------------------

# The pid from the pidfile, only when that process is alive and is our broker (not a reused pid).
running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $CONFIG" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_log_tail() {
  local file
  for file in "$CONSOLE_LOG" "$SERVER_LOG"; do
    if [ -s "$file" ]; then
      echo "----- last $LOG_LINES lines of $file -----" >&2
      tail -n "$LOG_LINES" "$file" >&2 || true
    fi
  done
}

# A real metadata request through the Python client when the venv has it; else the log line.
metadata_ok() {
  local py="$REPO_ROOT/.venv/bin/python"
  if [ -x "$py" ] && "$py" -c 'import kafka' 2>/dev/null; then
    "$py" - "127.0.0.1:$PORT" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000)
try:
    cluster = admin.describe_cluster()
    assert cluster["brokers"], cluster
    admin.list_topics()
finally:
    admin.close()
PY
  else
    grep -q "Kafka Server started" "$SERVER_LOG" 2>/dev/null
  fi
}

write_config() {
  mkdir -p "$DATA" "$LOGS"
  sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@LOG_DIR@|$DATA|g" \
    "$TEMPLATE" >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
}

java_cp() { echo "$LIBS/*"; }

format_storage() {
  if [ -f "$DATA/meta.properties" ]; then
    return 0
  fi
  local cluster_id
  cluster_id=$("$JAVA" -cp "$(java_cp)" kafka.tools.StorageTool random-uuid 2>>"$CONSOLE_LOG") ||
    die "kafka.tools.StorageTool random-uuid failed (see $CONSOLE_LOG)"
  say "formatting storage in $DATA (cluster id $cluster_id)"
  if ! "$JAVA" -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOGS" -cp "$(java_cp)" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" --ignore-formatted >>"$CONSOLE_LOG" 2>&1; then
    show_log_tail
    die "formatting the storage failed"
  fi
}

# --- commands -----------------------------------------------------------------------------------

cmd_start() {
  local pid
  if pid=$(running_pid); then
    say "already running (pid $pid) on 127.0.0.1:$PORT"
    echo "127.0.0.1:$PORT"
    return 0
  fi
  cmd_fetch
  need_tools java
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "127.0.0.1:$p is already in use by another process (not the broker of $PIDFILE); choose other ports with ANNOCLOUD_KAFKA_PORT / ANNOCLOUD_KAFKA_CONTROLLER_PORT"
    fi
  done
  write_config
  : >"$CONSOLE_LOG"
  format_storage
  say "starting Kafka on 127.0.0.1:$PORT (controller $CONTROLLER_PORT, state $BASE)"
  # shellcheck disable=SC2086  # HEAP holds several flags
  nohup "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOGS" \
    -cp "$(java_cp)" kafka.Kafka "$CONFIG" >>"$CONSOLE_LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  local start=$SECONDS
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      show_log_tail
      die "the broker exited during start-up (log tail above)"
    fi
    if port_open "$PORT" && metadata_ok; then
      break
    fi
    if ((SECONDS - start >= START_TIMEOUT)); then
      show_log_tail
      say "stopping the broker that did not come up (pid $pid)"
      stop_pid "$pid" TERM
      die "the broker did not answer a metadata request on 127.0.0.1:$PORT within ${START_TIMEOUT}s (log tail above)"
    fi
    sleep 0.5
  done
  say "up on 127.0.0.1:$PORT (pid $pid) after $((SECONDS - start))s"
  echo "127.0.0.1:$PORT"
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

# A live broker named by the pidfile but started with another config path (another checkout, or
# the same one through a symlink) is not ours to forget: say so and keep the pidfile.
refuse_foreign_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka"; then
    die "$PIDFILE names pid $pid, a Kafka broker started with another config than $CONFIG; stop it from the checkout that started it, or: kill $pid"
  fi
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    refuse_foreign_pid
    rm -f "$PIDFILE"
    say "not running (127.0.0.1:$PORT)"
    return 0
  fi
  say "stopping pid $pid"
  stop_pid "$pid" TERM
  say "stopped"
}

cmd_kill() {
  local pid
  if ! pid=$(running_pid); then
    refuse_foreign_pid
    rm -f "$PIDFILE"
    say "not running (127.0.0.1:$PORT)"
    return 0
  fi
  say "SIGKILL pid $pid"
  stop_pid "$pid" KILL
}

cmd_status() {
  local pid
  if pid=$(running_pid) && port_open "$PORT"; then
    echo "up (pid $pid, 127.0.0.1:$PORT, state $BASE)"
    return 0
  fi
  echo "down (127.0.0.1:$PORT)"
  return 3
}

cmd_logs() {
  [ -f "$SERVER_LOG" ] || die "no log yet at $SERVER_LOG"
  if [ "${1:-}" = "-f" ]; then
    exec tail -n "$LOG_LINES" -F "$SERVER_LOG"
  fi
  tail -n "$LOG_LINES" "$SERVER_LOG"
}

cmd_clean() {
  cmd_stop
  rm -rf "$BASE"
  say "removed $BASE"
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill) cmd_kill ;;
  restart)
    cmd_stop
    cmd_start
    ;;
  status) cmd_status ;;
  logs) cmd_logs "${2:-}" ;;
  bootstrap) echo "127.0.0.1:$PORT" ;;
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
