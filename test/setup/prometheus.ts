import path from 'node:path';
import { provideDebianTool } from './debian-tool.js';

/**
 * The metrics test scrapes a stack with a real Prometheus and the rules test runs promtool over
 * ops/prometheus. On a fresh machine there is neither: scripts/prometheus.sh installs Debian's
 * `prometheus` (both binaries) as root or fails naming what to do; the tests get their paths in
 * PROMETHEUS_PATH and PROMTOOL_PATH.
 */
export default function setup(): void {
  const prometheus = provideDebianTool('prometheus.sh', 'PROMETHEUS_PATH', 'Prometheus for the metrics tests');
  process.env.PROMTOOL_PATH ??= path.join(path.dirname(prometheus), 'promtool');
}
