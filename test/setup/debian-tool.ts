import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * Runs scripts/<script> (a scripts/debian-tool.sh wrapper: finds the tool, or installs its Debian
 * package as root, or fails naming what to do) once per test run, and puts the path it prints in
 * `variable`, inherited by the test processes. So `npm ci && npm test` needs no step of its own.
 */
export function provideDebianTool(script: string, variable: string, what: string): string {
  const root = path.resolve(import.meta.dirname, '../..');
  try {
    const out = execFileSync('bash', [path.join(root, 'scripts', script)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
    const found = out.trim().split('\n').pop();
    if (!found) throw new Error(`scripts/${script} printed no path`);
    process.env[variable] = found;
    return found;
  } catch (e) {
    throw new Error(`no ${what}: ${(e as Error).message}`);
  }
}
