// Hosts that share no disk (issue 11): every part is its own process with its own data folder
// and working directory — SeaweedFS, PostgreSQL, an API, a `workflows,cpu` worker and two `gpu`
// workers with one CPU "device" each — on the one Temporal dev server of the test run. Nothing
// but Temporal, PostgreSQL and the bucket is shared. A 2-replica fit runs with one replica on
// each gpu worker; the API serves the deployed model; then a gpu worker is SIGKILLed mid-fit,
// a replacement host with an empty cache joins, and the run completes.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../dev/dev-server.js';
import type { Seaweed } from '../../dev/seaweed.js';
import { Objects } from '../../lib/artifact-store/s3-objects.js';
import { getTestPostgresUrl } from '../ledger/pg.js';
import { startTestSeaweed } from '../helpers/seaweed.js';
import { waitFor } from '../helpers/stack.js';

const root = path.resolve(import.meta.dirname, '../..');
const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const BUCKET = 'capstan-hosts';
const PREFIX = 'prod';

interface Part {
  name: string;
  child: ChildProcess;
  dir: string;
  output: () => string;
}

let weed: Seaweed;
let objects: Objects;
let common: Record<string, string>;
let apiUrl: string;
const parts: Part[] = [];
const queue = `hosts-${randomBytes(4).toString('hex')}`;

/** One part in its own process group, data folder and working directory. */
function startPart(name: string, entry: string, env: Record<string, string>): Part {
  const dir = mkdtempSync(path.join(os.tmpdir(), `capstan-host-${name}-`));
  let out = '';
  const child = spawn(process.execPath, ['--import', tsx, path.join(root, entry)], {
    cwd: dir,
    env: { ...process.env, ...common, CAPSTAN_DATA_DIR: path.join(dir, 'data'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: a SIGKILL to the group takes its training child processes too, as a lost host would.
    detached: true,
  });
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  const part = { name, child, dir, output: () => out.slice(-4000) };
  parts.push(part);
  return part;
}

function killGroup(p: Part, signal: NodeJS.Signals): void {
  try {
    if (p.child.pid) process.kill(-p.child.pid, signal);
  } catch {
    /* already gone */
  }
}

async function stopPart(p: Part): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return killGroup(p, 'SIGKILL');
  const exited = new Promise((r) => p.child.once('exit', r));
  killGroup(p, 'SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
  killGroup(p, 'SIGKILL');
}

async function startWorker(name: string, env: Record<string, string>): Promise<Part> {
  const p = startPart(name, 'worker.ts', { CAPSTAN_HOST: name, ...env });
  await waitFor(async () => p.output().includes('worker up') || (p.child.exitCode !== null ? 'exited' : undefined), `${name} to start`, 150_000, 200);
  expect(p.child.exitCode, p.output()).toBeNull();
  return p;
}

async function gql(query: string, variables: Record<string, unknown> = {}): Promise<any> {
  const r = await fetch(`${apiUrl}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  const body = (await r.json()) as { data?: any; errors?: { message: string }[] };
  if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  return body.data;
}

const RUN = `id status stages { id status attempts metrics error }`;
async function runToClose(id: string): Promise<any> {
  return waitFor(
    async () => {
      const r = (await gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).run;
      return r && !['RUNNING'].includes(r.status) ? r : undefined;
    },
    `run ${id} to close`,
    600_000,
    500,
  );
}

const spec = (name: string, fit: Record<string, unknown>) => ({
  name,
  stages: [
    { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 2000, seed: 7 } },
    { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 1 } },
    {
      id: 'fit',
      plugin: 'core:multi-device-fit',
      params: { replicas: 2, ...fit },
      timeouts: { heartbeat: '3s' },
      retry: { maximumAttempts: 5, initialInterval: '500ms' },
    },
    { id: 'deploy', plugin: 'core:deploy', params: { modelName: name, quantize: 'none', latencyRuns: 10, gates: { minTestAccuracy: 0.3 } } },
  ],
});

beforeAll(async () => {
  weed = await startTestSeaweed();
  // PostgreSQL: the test cluster (CAPSTAN_TEST_DATABASE_URL, or scripts/postgres.sh), a database of this test's own.
  const base = getTestPostgresUrl();
  const dbName = `capstan_hosts_${process.pid}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${dbName}`;
  common = {
    ...weed.env(`${BUCKET}/${PREFIX}`),
    DATABASE_URL: url.toString(),
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    CAPSTAN_TASK_QUEUE: queue,
    CAPSTAN_SLOT_LEASE: '5s',
    CAPSTAN_SHUTDOWN_GRACE: '2s',
    CAPSTAN_LOG_LEVEL: 'info',
    CAPSTAN_GC_EVERY: 'off',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  objects = new Objects({
    bucket: BUCKET,
    client: new S3Client({
      endpoint: weed.endpoint,
      region: weed.region,
      forcePathStyle: true,
      credentials: { accessKeyId: weed.accessKeyId, secretAccessKey: weed.secretAccessKey },
    }),
  });
  const port = await freePort();
  const api = startPart('api', 'api/server.ts', { CAPSTAN_API_PORT: String(port), CAPSTAN_AUTH: 'off' });
  apiUrl = `http://127.0.0.1:${port}`;
  // The API migrates the database first; the workers start after it.
  await waitFor(
    async () =>
      (await fetch(`${apiUrl}/healthz`)
        .then((r) => r.ok)
        .catch(() => false)) || (api.child.exitCode !== null ? 'exited' : undefined),
    'the API',
    150_000,
    300,
  );
  expect(api.child.exitCode, api.output()).toBeNull();
  await startWorker('host-main', { CAPSTAN_WORKER_ROLES: 'workflows,cpu' });
  await startWorker('host-gpu-a', { CAPSTAN_WORKER_ROLES: 'gpu', CAPSTAN_GPUS: 'cpu:1' });
  await startWorker('host-gpu-b', { CAPSTAN_WORKER_ROLES: 'gpu', CAPSTAN_GPUS: 'cpu:1' });
});

afterAll(async () => {
  for (const p of [...parts].reverse()) await stopPart(p);
  await weed?.stop();
});

describe('hosts that share no disk', () => {
  it('a worker refuses the gpu role on a host without GPUs unless CAPSTAN_GPUS=cpu:N', async () => {
    const p = startPart('no-gpu', 'worker.ts', { CAPSTAN_WORKER_ROLES: 'gpu' });
    const code = await new Promise<number | null>((r) => p.child.once('exit', (c) => r(c)));
    expect(code).toBe(1);
    expect(p.output()).toMatch(/refusing the gpu role: this host has no GPU.*CAPSTAN_GPUS=cpu:N/);
  });

  it('runs a 2-replica fit with one replica on each gpu host, and the API serves the deployed model', async () => {
    const { startPipeline } = await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: spec('hosts-fit', { epochs: 1, syncEverySteps: 10 }),
    });
    const run = await runToClose(startPipeline.id);
    expect(run.status, JSON.stringify(run.stages.map((s: any) => [s.id, s.status, s.error]))).toBe('COMPLETED');
    const fit = run.stages.find((s: any) => s.id === 'fit');
    // Metrics name the host and device each replica ran on: one on each gpu host.
    expect([fit.metrics.deviceReplica0, fit.metrics.deviceReplica1].sort()).toEqual(['host-gpu-a/cpu:0', 'host-gpu-b/cpu:0']);
    // The API process — its own folder, nothing shared — loads the model from the bucket and answers.
    const predicted = await waitFor(
      async () => {
        const res = await fetch(`${apiUrl}/models/hosts-fit/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ inputs: [new Array(784).fill(0)] }),
        });
        return res.status === 200 ? ((await res.json()) as { predictions: unknown[] }) : undefined;
      },
      'the API to serve hosts-fit',
      60_000,
      500,
    );
    expect(predicted.predictions).toHaveLength(1);
  });

  it('completes after a gpu host is SIGKILLed mid-fit: a new host with an empty cache resumes the lost replica from the bucket', async () => {
    const { startPipeline } = await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: spec('hosts-kill', { epochs: 3, syncEverySteps: 5 }),
    });
    const id = startPipeline.id as string;
    // Mid-fit, seen through the bucket: averaged weights of round 2 are there.
    const rounds = `${PREFIX}/runs/${id.replace(/[^A-Za-z0-9._-]/g, '_')}/fit/_checkpoints/`;
    await waitFor(async () => (await objects.list(rounds)).some((o) => /round-0000[2-9]\/avg\.bin$/.test(o.key)), 'round 2 of the fit', 300_000, 200);
    const victim = parts.find((p) => p.name === 'host-gpu-b')!;
    killGroup(victim, 'SIGKILL');
    // One slot is left and the gang needs two at once: a replacement host joins, with an empty cache.
    await startWorker('host-gpu-c', { CAPSTAN_WORKER_ROLES: 'gpu', CAPSTAN_GPUS: 'cpu:1' });
    const run = await runToClose(id);
    expect(run.status, JSON.stringify(run.stages.map((s: any) => [s.id, s.status, s.error]))).toBe('COMPLETED');
    const fit = run.stages.find((s: any) => s.id === 'fit');
    const devices = [fit.metrics.deviceReplica0, fit.metrics.deviceReplica1];
    expect(devices.sort()).toEqual(['host-gpu-a/cpu:0', 'host-gpu-c/cpu:0']);
    // The lost replica resumed on the new host from an average it fetched from the bucket, not from round 0.
    const moved = [0, 1].find((i) => fit.metrics[`deviceReplica${i}`] === 'host-gpu-c/cpu:0')!;
    expect(fit.metrics[`resumedFromRoundReplica${moved}`]).toBeGreaterThan(0);
  });
});
