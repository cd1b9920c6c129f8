import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { backendFromEnv, loadTf } from '../../ml/backend.js';

// Runs in both vitest projects: 'wasm' sets CAPSTAN_TF_BACKEND=wasm, 'native' sets node.
const expected = backendFromEnv() ?? 'wasm';
const tfName = { 'node-gpu': 'tensorflow', node: 'tensorflow', wasm: 'wasm', cpu: 'cpu' }[expected];

describe(`TensorFlow.js backend (${expected})`, () => {
  it('this process loads the backend the project asks for', async () => {
    const { tf, backend, skipped } = await loadTf();
    expect({ backend, tf: tf.getBackend() }, JSON.stringify(skipped)).toEqual({ backend: expected, tf: tfName });
    expect(Array.from(await tf.tensor([1, 2, 3]).square().data())).toEqual([1, 4, 9]);
  });

  it('a child Node process (how training runs) loads the same backend', () => {
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const backendTs = pathToFileURL(path.resolve(import.meta.dirname, '../../ml/backend.ts')).href;
    const code = `const { loadTf } = await import(${JSON.stringify(backendTs)}); const r = await loadTf(); console.log(JSON.stringify({ backend: r.backend, tf: r.tf.getBackend() }));`;
    const r = spawnSync(process.execPath, ['--import', tsx, '--input-type=module', '-e', code], { encoding: 'utf8', env: process.env, timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ backend: expected, tf: tfName });
  });
});
