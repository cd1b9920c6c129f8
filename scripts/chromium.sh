#!/usr/bin/env bash
# Find Chromium for the browser tests, installing Debian's `chromium` when none is found.
#
#   scripts/chromium.sh        prints one line on stdout: the path of the Chromium binary
#
# Looks at CHROMIUM_PATH, then `chromium` / `chromium-browser` on PATH; otherwise installs
# Debian's chromium as root, or fails naming the command to run (scripts/debian-tool.sh).
exec bash "$(dirname "$0")/debian-tool.sh" chromium CHROMIUM_PATH chromium chromium-browser
