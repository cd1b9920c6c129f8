import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * The browser tests (the Temporal UI, the API from a page, the console) drive a real headless
 * Chromium. On a fresh machine there is none: scripts/chromium.sh installs Debian's `chromium`
 * (as root) or fails naming what to do, once per test run, and the tests get its path in
 * CHROMIUM_PATH (inherited by the test processes). So `npm ci && npm test` needs no step of its own.
 */
export default function setup(): void {
  const root = path.resolve(import.meta.dirname, '../..');
  try {
    const out = execFileSync('bash', [path.join(root, 'scripts', 'chromium.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
    const found = out.trim().split('\n').pop();
    if (!found) throw new Error('scripts/chromium.sh printed no path');
    process.env.CHROMIUM_PATH = found;
  } catch (e) {
    throw new Error(`no Chromium for the browser tests: ${(e as Error).message}`);
  }
}
