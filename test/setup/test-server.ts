import path from 'node:path';
import { resolveTestServer } from '../../dev/test-server.js';
import { createConsoleLogger } from '../../lib/logger.js';

/**
 * The time-skipping workflow tests run Temporal's test server (the pinned version, dev/test-server.ts).
 * Found or installed (through Maven Central, about a minute on a fresh machine) once per test run,
 * before the test files start; its launcher's path goes to TEMPORAL_TEST_SERVER_PATH.
 */
export default function setup(): void {
  const root = path.resolve(import.meta.dirname, '../..');
  const server = resolveTestServer({
    toolsDir: path.join(root, '.tools'),
    env: process.env,
    logger: createConsoleLogger({ name: 'test-server', level: 'info', format: 'text' }),
  });
  process.env.TEMPORAL_TEST_SERVER_PATH = server.path;
}
