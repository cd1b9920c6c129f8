#!/usr/bin/env bash
# Stops a cluster started by scripts/postgres.sh:  scripts/postgres-stop.sh [DATA_DIR]  (default .data/pg)
set -euo pipefail
DATA_DIR="${1:-.data/pg}"
CLUSTER="$DATA_DIR/cluster"
[ -f "$CLUSTER/postmaster.pid" ] || exit 0
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
if [ -z "$BIN" ]; then BIN="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"; fi
if [ "$(id -u)" -eq 0 ]; then AS_OWNER=(runuser -u postgres --); else AS_OWNER=(); fi
"${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$CLUSTER" stop -m fast -w -t 30 >&2 || true
