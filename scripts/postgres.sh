#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for Capstan (tests, CI, local multi-host trials).
#
#   scripts/postgres.sh [DATA_DIR] [PORT] [DB_NAME]      (defaults: .data/pg 54329 capstan)
#
# Installs Debian's `postgresql` package if no server binaries are found, initialises a cluster
# in DATA_DIR (trust auth, listening on 127.0.0.1 only), starts it, creates DB_NAME, and prints
# one line on stdout: the DATABASE_URL. All logs go to stderr. Idempotent and safe to call
# concurrently (flock): a running cluster is reused, a stopped one is started.
# When run as root the cluster belongs to the `postgres` system user (initdb refuses root).
# Stop it with:  pg_ctl -D DATA_DIR stop   (as the same user: runuser -u postgres -- pg_ctl …)
set -euo pipefail

DATA_DIR="${1:-.data/pg}"
PORT="${2:-54329}"
DB_NAME="${3:-capstan}"
PG_USER_NAME="capstan"

log() { echo "postgres.sh: $*" >&2; }

mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
CLUSTER="$DATA_DIR/cluster"
LOCK="$DATA_DIR/.lock"

find_bin() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/pg_ctl" ]; then echo "$PG_BIN"; return 0; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
  fi
  return 1
}

exec 9>"$LOCK"
flock 9

if ! BIN="$(find_bin)"; then
  log "no PostgreSQL server binaries found; installing Debian's postgresql"
  if [ "$(id -u)" -ne 0 ]; then log "need root to apt-get install postgresql"; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends postgresql >&2
  BIN="$(find_bin)" || { log "postgresql installed but pg_ctl/initdb not found"; exit 1; }
fi

# Run a command with only stdin/stdout/stderr open: the server it may leave running must not
# inherit our lock (fd 9) or a caller's pipes (which would keep them open forever).
detached() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd="${fd##*/}"
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@"
  )
}

# Run a server binary as the cluster owner.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  chown postgres: "$DATA_DIR"
  AS_OWNER=(runuser -u postgres --)
  if ! runuser -u postgres -- test -w "$DATA_DIR"; then
    log "the postgres user cannot reach $DATA_DIR (a parent folder is not world-searchable); use a folder it can reach, e.g. /tmp/capstan-pg"
    exit 1
  fi
else
  AS_OWNER=()
fi
as_owner() { "${AS_OWNER[@]}" "$@"; }

if [ ! -f "$CLUSTER/PG_VERSION" ]; then
  log "initialising a cluster in $CLUSTER"
  rm -rf "$CLUSTER"
  as_owner "$BIN/initdb" -D "$CLUSTER" -U "$PG_USER_NAME" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >&2 \
    || as_owner "$BIN/initdb" -D "$CLUSTER" -U "$PG_USER_NAME" --auth=trust --encoding=UTF8 --no-locale >&2
fi

if as_owner "$BIN/pg_ctl" -D "$CLUSTER" status >/dev/null 2>&1; then
  RUNNING_PORT="$(sed -n '4p' "$CLUSTER/postmaster.pid" 2>/dev/null || true)"
  if [ -n "$RUNNING_PORT" ] && [ "$RUNNING_PORT" != "$PORT" ]; then
    log "cluster already running on port $RUNNING_PORT (asked for $PORT); using $RUNNING_PORT"
    PORT="$RUNNING_PORT"
  fi
else
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT on 127.0.0.1 is taken by another server; pick another port (second argument)"
    exit 1
  fi
  log "starting PostgreSQL on 127.0.0.1:$PORT"
  # A stale pid file from a killed server would block the start.
  rm -f "$CLUSTER/postmaster.pid"
  detached "${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$CLUSTER" -l "$DATA_DIR/server.log" -w -t 60 \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DATA_DIR -c max_connections=200 -c fsync=off" start </dev/null >&2 \
    || { log "server failed to start; last log lines:"; tail -n 20 "$DATA_DIR/server.log" >&2 || true; exit 1; }
fi

PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$PG_USER_NAME" -d postgres -v ON_ERROR_STOP=1 -qtA)
for _ in $(seq 1 50); do
  if "${PSQL[@]}" -c 'SELECT 1' >/dev/null 2>&1; then break; fi
  sleep 0.2
done
if [ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
  log "creating database $DB_NAME"
  "${PSQL[@]}" -c "CREATE DATABASE \"$DB_NAME\"" >&2
fi

echo "postgres://$PG_USER_NAME@127.0.0.1:$PORT/$DB_NAME"
