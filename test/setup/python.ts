import { spawnSync } from 'node:child_process';
import path from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The Python of stages written in Python: CAPSTAN_PYTHON, else the venv of `npm run setup:python`. */
    pythonPath: string;
  }
}

/**
 * The Python the tests run stages and the SDK's own tests with. Without CAPSTAN_PYTHON, runs
 * `npm run setup:python` (idempotent: about a second when the venv is in place; a few minutes
 * from nothing), so `npm test` needs no step of its own for Python.
 */
export default function setup(project: TestProject): void {
  const root = path.resolve(import.meta.dirname, '../..');
  let python = process.env.CAPSTAN_PYTHON;
  if (!python) {
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'setup-python.mjs')], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = (r.stdout ?? '').trim().split('\n');
    if (r.status !== 0) throw new Error(`npm run setup:python failed (exit ${r.status}):\n${lines.slice(-20).join('\n')}`);
    python = lines.at(-1)!.trim();
  }
  project.provide('pythonPath', python);
}
