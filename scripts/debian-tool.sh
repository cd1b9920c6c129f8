#!/usr/bin/env bash
# Find a tool the tests run, installing the Debian package that ships it when none is found.
#
#   scripts/debian-tool.sh PACKAGE VARIABLE COMMAND...
#       prints one line on stdout: the path of the tool
#
# Looks at $VARIABLE (a path), then each COMMAND on PATH. When none is found it runs
# `apt-get install PACKAGE` (as root; the packages come from Debian's mirror, which this kind of
# machine reaches) and says so on stderr. Without root it fails naming the command to run.
# Idempotent and safe to call concurrently (flock per package), like scripts/postgres.sh.
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: $0 PACKAGE VARIABLE COMMAND..." >&2; exit 2; }
package=$1 variable=$2
shift 2
log() { echo "debian-tool.sh ($package): $*" >&2; }

find_tool() {
  local given=${!variable:-}
  if [ -n "$given" ]; then
    [ -x "$given" ] && { echo "$given"; return 0; }
    log "$variable=$given is not an executable file"; exit 1
  fi
  local c
  for c in "$@"; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

if find_tool "$@"; then exit 0; fi

LOCK="${TMPDIR:-/tmp}/capstan-$package.lock"
exec 9>"$LOCK"
flock 9
if find_tool "$@"; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  log "$1 not found and not root: install Debian's $package (sudo apt-get install $package) or set $variable"
  exit 1
fi
log "$1 not found; installing Debian's $package (apt-get, about a minute)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "$package" >&2
find_tool "$@" || { log "$package installed but $1 is not on PATH"; exit 1; }
