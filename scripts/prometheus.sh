#!/usr/bin/env bash
# Find Prometheus (and promtool beside it) for the metrics and alerting-rule tests, installing
# Debian's `prometheus` when none is found.
#
#   scripts/prometheus.sh      prints one line on stdout: the path of the prometheus binary
#
# Looks at PROMETHEUS_PATH, then `prometheus` on PATH; otherwise installs Debian's prometheus as
# root, or fails naming the command to run (scripts/debian-tool.sh).
exec bash "$(dirname "$0")/debian-tool.sh" prometheus PROMETHEUS_PATH prometheus
