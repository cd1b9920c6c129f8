import path from 'node:path';
import { resolveJaeger } from '../../dev/jaeger.js';
import { createConsoleLogger } from '../../lib/logger.js';

/**
 * The tracing tests read traces back from a real Jaeger (the pinned version, dev/jaeger.ts). Found
 * or built (through the Go module proxy, a few minutes on a fresh machine) once per test run,
 * before the test files start, so parallel files never build it twice; its path goes to JAEGER_PATH.
 */
export default function setup(): void {
  const root = path.resolve(import.meta.dirname, '../..');
  const jaeger = resolveJaeger({
    toolsDir: path.join(root, '.tools'),
    env: process.env,
    logger: createConsoleLogger({ name: 'jaeger', level: 'info', format: 'text' }),
  });
  process.env.JAEGER_PATH = jaeger.path;
}
