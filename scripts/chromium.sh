#!/usr/bin/env bash
# Find Chromium for the browser tests, installing Debian's `chromium` when none is found.
#
#   scripts/chromium.sh        prints one line on stdout: the path of the Chromium binary
#
# Looks at CHROMIUM_PATH, then `chromium` / `chromium-browser` on PATH. When none is found it runs
# `apt-get install chromium` (as root; the packages come from Debian's mirror, which this kind of
# machine reaches) and says so on stderr. Without root it fails naming the command to run.
# Idempotent and safe to call concurrently (flock), like scripts/postgres.sh.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

find_chromium() {
  if [ -n "${CHROMIUM_PATH:-}" ]; then
    [ -x "$CHROMIUM_PATH" ] && { echo "$CHROMIUM_PATH"; return 0; }
    log "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable file"; exit 1
  fi
  local c
  for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

if find_chromium; then exit 0; fi

LOCK="${TMPDIR:-/tmp}/capstan-chromium.lock"
exec 9>"$LOCK"
flock 9
if find_chromium; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  log "Chromium not found and not root: install Debian's chromium (sudo apt-get install chromium) or set CHROMIUM_PATH"
  exit 1
fi
log "Chromium not found; installing Debian's chromium (apt-get, about a minute)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >&2
find_chromium || { log "chromium installed but not found on PATH"; exit 1; }
