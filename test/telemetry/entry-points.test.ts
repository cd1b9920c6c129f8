// The entry points as an operator runs them (`npm run worker`, `npm run api`) with
// CAPSTAN_OPS_LISTEN and CAPSTAN_METRICS_TOKEN: the worker's ops listener serves Capstan's metrics
// with the Temporal SDK's appended, and the API serves /metrics on its own port and on its ops
// listener, each only with the scrape token.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { freeLocalPort } from '../../lib/telemetry/metrics.js';
import { waitFor } from '../helpers/stack.js';
import { sample } from './prom-text.js';

const TOKEN = 'entry-points-scrape-token';
const children: ChildProcess[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-entry-metrics-'));
const log: string[] = [];

function start(entry: string, env: Record<string, string>): ChildProcess {
  const c = spawn(process.execPath, ['--import', 'tsx', '--conditions=capstan-source', entry], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const s of [c.stdout!, c.stderr!]) s.on('data', (b: Buffer) => void log.push(`${entry}: ${b.toString()}`));
  children.push(c);
  return c;
}

afterAll(async () => {
  await Promise.all(
    children.map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }),
  );
  rmSync(dir, { recursive: true, force: true });
});

describe('the worker and API entry points with metrics on', () => {
  it('serve /metrics with the scrape token, the worker with the Temporal SDK metrics appended', { timeout: 240_000 }, async () => {
    const [workerOps, apiOps, apiPort] = [await freeLocalPort(), await freeLocalPort(), await freeLocalPort()];
    const env = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      CAPSTAN_DATA_DIR: dir,
      CAPSTAN_TASK_QUEUE: `entry-${Date.now().toString(36)}`,
      CAPSTAN_METRICS_TOKEN: TOKEN,
      CAPSTAN_LOG_FORMAT: 'text',
    };
    start('worker.ts', { ...env, CAPSTAN_OPS_LISTEN: `127.0.0.1:${workerOps}`, CAPSTAN_WORKER_ROLES: 'workflows,cpu' });
    start('api/server.ts', { ...env, CAPSTAN_OPS_LISTEN: `127.0.0.1:${apiOps}`, CAPSTAN_API_PORT: String(apiPort) });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const scrape = (url: string) =>
      waitFor(
        async () => {
          if (children.some((c) => c.exitCode !== null)) throw new Error(`an entry point exited:\n${log.join('').slice(-3000)}`);
          const r = await fetch(url, { headers: auth });
          return r.ok ? r.text() : undefined;
        },
        `${url} to answer`,
        120_000,
        500,
      );

    const worker = await scrape(`http://127.0.0.1:${workerOps}/metrics`);
    expect(sample(worker, 'capstan_worker_up', { roles: 'cpu,workflows' })).toBe(1);
    expect(worker).toMatch(/^temporal_\w+/m);
    expect((await fetch(`http://127.0.0.1:${workerOps}/metrics`)).status).toBe(401);

    for (const url of [`http://127.0.0.1:${apiPort}/metrics`, `http://127.0.0.1:${apiOps}/metrics`]) {
      // The worker reported its slots: the API reads them from the queue's slot keeper at scrape time.
      const text = await waitFor(
        async () => {
          const t = await scrape(url);
          return samples(t).some((l) => l.startsWith('capstan_slot_workers{') && l.endsWith(' 1')) ? t : undefined;
        },
        `the slot keeper's figures at ${url}`,
        60_000,
        500,
      );
      expect(sample(text, 'capstan_scrape_source_up', { source: 'slots' })).toBe(1);
      expect((await fetch(url)).status).toBe(401);
    }
  });
});

/** The sample lines of a scrape. */
function samples(text: string): string[] {
  return text.split('\n').filter((l) => l && !l.startsWith('#'));
}
