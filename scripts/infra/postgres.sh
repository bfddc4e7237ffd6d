#!/usr/bin/env bash
# A local PostgreSQL for annocloud's cluster mode, from Debian's packages, in its own data directory
# and on its own port, listening on 127.0.0.1 only. Idempotent; see --help.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/infra/postgres.sh COMMAND [ARGS...]

Commands
  install   install Debian's PostgreSQL (postgresql-$ANNOCLOUD_PG_MAJOR) unless initdb is already there
  start     initdb (first time), start the server, wait until ready, create role + database; prints the URL
  stop      stop the server (pg_ctl stop -m $ANNOCLOUD_PG_STOP_MODE); does nothing when it is not running
  restart   stop, then start
  status    exit 0 and say so when the server runs and accepts connections, 3 otherwise
  url       print the SQLAlchemy URL of the annocloud database
  psql      run psql as the annocloud role on the annocloud database (extra ARGS are passed to psql)

Settings (environment)
  ANNOCLOUD_INFRA_DIR            where state lives (default .cache/infra, relative to the repo root);
                                 the cluster is <dir>/pg-<port>/data, the log <dir>/pg-<port>/postgres.log
  ANNOCLOUD_PG_PORT              TCP port on 127.0.0.1 (default 15432)
  ANNOCLOUD_PG_MAJOR             PostgreSQL major version to install/use (default 15, Debian bookworm)
  ANNOCLOUD_PG_MAX_CONNECTIONS   max_connections (default 200: five services with pooled engines)
  ANNOCLOUD_PG_STOP_MODE         smart | fast | immediate (default fast)
  ANNOCLOUD_PG_FSYNC             on | off (default on; chaos tests restart the server and need durability)

The role and database are both "annocloud"; authentication is trust on 127.0.0.1 only (a local
development and test cluster, not a production one). No Unix socket is created.
EOF
}

die() {
  echo "postgres.sh: error: $*" >&2
  exit 1
}
say() { echo "postgres.sh: $*" >&2; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PORT=${ANNOCLOUD_PG_PORT:-15432}
PG_MAJOR=${ANNOCLOUD_PG_MAJOR:-15}
MAX_CONNECTIONS=${ANNOCLOUD_PG_MAX_CONNECTIONS:-200}
STOP_MODE=${ANNOCLOUD_PG_STOP_MODE:-fast}
FSYNC=${ANNOCLOUD_PG_FSYNC:-on}
INFRA_DIR=${ANNOCLOUD_INFRA_DIR:-.cache/infra}
case "$INFRA_DIR" in
  /*) ;;
  *) INFRA_DIR="$REPO_ROOT/$INFRA_DIR" ;;
esac
BASE="$INFRA_DIR/pg-$PORT"
PGDATA="$BASE/data"
LOGFILE="$BASE/postgres.log"
DB_NAME=annocloud
DB_ROLE=annocloud
SUPERUSER=postgres

[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "ANNOCLOUD_PG_PORT=$PORT is not a TCP port"
[[ "$MAX_CONNECTIONS" =~ ^[0-9]+$ ]] || die "ANNOCLOUD_PG_MAX_CONNECTIONS=$MAX_CONNECTIONS is not a number"
case "$STOP_MODE" in smart | fast | immediate) ;; *) die "ANNOCLOUD_PG_STOP_MODE must be smart, fast or immediate" ;; esac
case "$FSYNC" in on | off) ;; *) die "ANNOCLOUD_PG_FSYNC must be on or off" ;; esac

url() { echo "postgresql+psycopg://$DB_ROLE@127.0.0.1:$PORT/$DB_NAME"; }

find_bindir() {
  if [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/initdb" ]; then
    echo "/usr/lib/postgresql/$PG_MAJOR/bin"
    return 0
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then
    echo "$found"
    return 0
  fi
  return 1
}

bindir() {
  find_bindir || die "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin): run '$0 install'"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# pg_ctl and initdb refuse to run as root: run them as the postgres OS user then.
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

cmd_install() {
  if find_bindir >/dev/null; then
    say "PostgreSQL already installed: $(find_bindir)"
    return 0
  fi
  is_root || die "installing PostgreSQL needs root (apt-get); run: sudo $0 install"
  command -v apt-get >/dev/null || die "apt-get not found: install PostgreSQL $PG_MAJOR by other means"
  say "installing postgresql-$PG_MAJOR from Debian (apt-get update + install)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "postgresql-$PG_MAJOR" || die "apt-get install postgresql-$PG_MAJOR failed"
  find_bindir >/dev/null || die "postgresql-$PG_MAJOR installed but no initdb under /usr/lib/postgresql/$PG_MAJOR/bin"
  say "installed: $(find_bindir)"
}

running() {
  local bin
  bin=$(bindir)
  [ -f "$PGDATA/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

ready() {
  "$(bindir)/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres -U "$SUPERUSER" -t 2
}

write_conf() {
  # Rewritten at every start so settings from the environment apply; postgresql.conf includes it.
  cat >"$PGDATA/annocloud.conf" <<EOF
# written by scripts/infra/postgres.sh at every start; edits are lost
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
max_connections = $MAX_CONNECTIONS
fsync = $FSYNC
synchronous_commit = on
full_page_writes = on
default_transaction_isolation = 'read committed'
timezone = 'UTC'
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  if is_root; then chown postgres:postgres "$PGDATA/annocloud.conf"; fi
}

init_cluster() {
  local bin=$1
  mkdir -p "$BASE"
  if is_root; then
    chown postgres:postgres "$BASE"
    runuser -u postgres -- test -w "$BASE" ||
      die "the postgres OS user cannot write $BASE (a parent directory is not traversable?): choose ANNOCLOUD_INFRA_DIR elsewhere"
  fi
  say "initdb in $PGDATA"
  as_pg "$bin/initdb" -D "$PGDATA" -U "$SUPERUSER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    >"$BASE/initdb.log" 2>&1 || {
    cat "$BASE/initdb.log" >&2
    die "initdb failed (log above)"
  }
  # Trust on 127.0.0.1 only; no socket, no other address.
  cat >"$PGDATA/pg_hba.conf" <<'EOF'
# written by scripts/infra/postgres.sh: TCP on 127.0.0.1 only, trust (local development cluster)
host    all    all    127.0.0.1/32    trust
EOF
  echo "include_if_exists = 'annocloud.conf'" >>"$PGDATA/postgresql.conf"
  if is_root; then chown postgres:postgres "$PGDATA/pg_hba.conf" "$PGDATA/postgresql.conf"; fi
}

psql_super() {
  "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" "$@"
}

ensure_database() {
  local has_role has_db
  has_role=$(psql_super -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$DB_ROLE'")
  if [ "$has_role" != "1" ]; then
    psql_super -d postgres -c "CREATE ROLE $DB_ROLE LOGIN CREATEDB"
  fi
  has_db=$(psql_super -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")
  if [ "$has_db" != "1" ]; then
    psql_super -d postgres -c "CREATE DATABASE $DB_NAME OWNER $DB_ROLE"
  fi
}

cmd_start() {
  local bin
  bin=$(bindir)
  if is_root; then
    getent passwd postgres >/dev/null || die "no 'postgres' OS user (is the Debian package installed? run '$0 install')"
  fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    init_cluster "$bin"
  fi
  if running; then
    say "already running on 127.0.0.1:$PORT ($PGDATA)"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      die "port $PORT on 127.0.0.1 is taken by another process: set ANNOCLOUD_PG_PORT"
    fi
    write_conf
    if is_root; then touch "$LOGFILE" && chown postgres:postgres "$LOGFILE"; fi
    say "starting on 127.0.0.1:$PORT (log $LOGFILE)"
    as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$LOGFILE" -w -t 60 start >/dev/null || {
      tail -n 30 "$LOGFILE" >&2 || true
      die "pg_ctl start failed (last log lines above)"
    }
  fi
  local waited=0
  until ready; do
    waited=$((waited + 1))
    ((waited < 60)) || {
      tail -n 30 "$LOGFILE" >&2 || true
      die "server did not accept connections on 127.0.0.1:$PORT within 60 s"
    }
    sleep 1
  done
  ensure_database
  url
}

cmd_stop() {
  local bin
  bin=$(bindir)
  if [ ! -f "$PGDATA/PG_VERSION" ] || ! running; then
    say "not running (port $PORT)"
    return 0
  fi
  say "stopping (mode $STOP_MODE)"
  as_pg "$bin/pg_ctl" -D "$PGDATA" -m "$STOP_MODE" -w -t 60 stop >/dev/null || die "pg_ctl stop failed (see $LOGFILE)"
}

cmd_status() {
  if [ -f "$PGDATA/PG_VERSION" ] && running && ready; then
    echo "running: $(url) (data $PGDATA)"
    return 0
  fi
  echo "not running (port $PORT, data $PGDATA)"
  return 3
}

cmd_psql() {
  exec "$(bindir)/psql" -X -h 127.0.0.1 -p "$PORT" -U "$DB_ROLE" -d "$DB_NAME" "$@"
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
  url) url ;;
  psql)
    shift
    cmd_psql "$@"
    ;;
  -h | --help | help) usage ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    echo "postgres.sh: unknown command '$1'" >&2
    usage >&2
    exit 2
    ;;
esac
