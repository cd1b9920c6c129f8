// Artifact store benchmarks: the local folder against S3 on a real SeaweedFS server (same machine).
//  1. Round trip of one artifact, 100 MB and 1 KB: put (write the folder, hash, and — for S3 —
//     upload and seal) and get on another host (for S3: an empty cache, so fetch + hash check;
//     for the folder: the same path, read). Median of several runs.
//  2. A pipeline end to end on each store (pipelines/mnist-small.yaml by default), alternating,
//     median wall time from start to COMPLETED.
// Usage: npx tsx bench/artifacts.ts [--big-runs 5] [--small-runs 30] [--pipeline-runs 3] [--pipeline-warmup 1]
//                                  [--pipeline pipelines/mnist-small.yaml]
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { S3Client } from '@aws-sdk/client-s3';
import { createApiApp } from '../app/api.js';
import { loadConfig } from '../app/config.js';
import { createRuntime, type Runtime as CapstanRuntime } from '../app/runtime.js';
import { createWorkers } from '../app/workers.js';
import { startDevServer } from '../dev/dev-server.js';
import { resolveWeed, startSeaweed, type Seaweed } from '../dev/seaweed.js';
import { resolveTemporalCli } from '../dev/temporal-cli.js';
import { S3ArtifactStore } from '../lib/artifact-store/s3-store.js';
import { ArtifactStore } from '../lib/artifacts.js';
import { createConsoleLogger, silentLogger } from '../lib/logger.js';
import { machineLine, median } from './machine.js';

const { values: flags } = parseArgs({
  options: {
    'big-runs': { type: 'string', default: '5' },
    'small-runs': { type: 'string', default: '30' },
    'pipeline-runs': { type: 'string', default: '3' },
    /** 0: count every pipeline run (for long pipelines, where start-up is noise). */
    'pipeline-warmup': { type: 'string', default: '1' },
    pipeline: { type: 'string', default: 'pipelines/mnist-small.yaml' },
  },
});
const num = (k: keyof typeof flags, min: number) => {
  const n = Number(flags[k]);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${k} must be a whole number ≥ ${min}, got ${flags[k]}`);
  return n;
};
const root = path.resolve(import.meta.dirname, '..');
const logger = createConsoleLogger({ name: 'bench', level: 'warn' });

function s3Store(weed: Seaweed, bucket: string): S3ArtifactStore {
  const client = new S3Client({
    endpoint: weed.endpoint,
    region: weed.region,
    forcePathStyle: true,
    credentials: { accessKeyId: weed.accessKeyId, secretAccessKey: weed.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return new S3ArtifactStore({
    location: { bucket, prefix: 'bench' },
    client,
    cacheDir: mkdtempSync(path.join(os.tmpdir(), 'capstan-bench-cache-')),
    createBucket: true,
  });
}

async function readAll(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) n += (await readFile(path.join(dir, f))).length;
  return n;
}

interface Row {
  store: string;
  size: string;
  runs: number;
  putMs: number;
  getMs: number;
  bytes: number;
}

async function roundTrips(weed: Seaweed, bytes: number, runs: number, label: string): Promise<Row[]> {
  const body = randomBytes(bytes);
  const rows: Row[] = [];
  for (const kind of ['local folder', 'SeaweedFS (S3)'] as const) {
    const put: number[] = [];
    const get: number[] = [];
    for (let r = 0; r < runs + 1; r++) {
      // Two "hosts" over one storage: the writer, and a reader with an empty cache.
      let a: ArtifactStore;
      let b: ArtifactStore;
      if (kind === 'local folder') {
        const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-bench-local-'));
        a = new ArtifactStore(dir);
        b = new ArtifactStore(dir);
      } else {
        a = s3Store(weed, 'bench-artifacts');
        b = s3Store(weed, 'bench-artifacts');
      }
      await a.open();
      await b.open();
      const key = { runId: `bench-${label}-${r}-${randomBytes(3).toString('hex')}`, stageId: 'data', kind: 'dataset' };
      const t0 = performance.now();
      const ref = await a.writeOutput(key, async (dir) => writeFile(path.join(dir, 'data.bin'), body));
      const t1 = performance.now();
      const got = await readAll(await b.localPath(ref));
      const t2 = performance.now();
      if (got !== bytes) throw new Error(`read ${got} bytes, wrote ${bytes}`);
      // The first run warms up (connections, JIT) and is not counted.
      if (r > 0) {
        put.push(t1 - t0);
        get.push(t2 - t1);
      }
      await rm(a.root, { recursive: true, force: true });
      if (b.root !== a.root) await rm(b.root, { recursive: true, force: true });
      await a.close();
      await b.close();
    }
    rows.push({ store: kind, size: label, runs, putMs: median(put), getMs: median(get), bytes });
  }
  return rows;
}

interface PipelineResult {
  store: string;
  ms: number[];
  /** Per run: seconds each stage took (first start → close). */
  stages: Record<string, number>[];
  /** Per run: ms stages waited on the bucket (seal + fetch), S3 only. */
  storeMs: number[];
}

async function pipelines(weed: Seaweed, runs: number, warmup: number, specPath: string): Promise<PipelineResult[]> {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-bench-pipe-'));
  const cli = await resolveTemporalCli({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
  const server = await startDevServer({ cliPath: cli.path, dbFile: path.join(dir, 'temporal.db'), logger });
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection });
  const nc = await NativeConnection.connect({ address: server.address });
  const text = readFileSync(path.resolve(root, specPath), 'utf8');
  const stacks: { store: string; rt: CapstanRuntime; workers: Worker[]; running: Promise<unknown>[]; start: () => Promise<string> }[] = [];
  for (const [store, env] of [
    ['local folder', {}],
    ['SeaweedFS (S3)', weed.env('bench-pipeline/runs')],
  ] as [string, Record<string, string>][]) {
    const data = path.join(dir, store.startsWith('local') ? 'local' : 's3');
    const config = loadConfig(
      {
        CAPSTAN_DATA_DIR: data,
        CAPSTAN_TASK_QUEUE: store.startsWith('local') ? 'bench-local' : 'bench-s3',
        ...(process.env.CAPSTAN_TF_BACKEND ? { CAPSTAN_TF_BACKEND: process.env.CAPSTAN_TF_BACKEND } : {}),
        ...env,
      },
      data,
    );
    const rt = await createRuntime(config, silentLogger);
    const workers = await createWorkers({
      connection: nc,
      namespace: 'default',
      taskQueues: config.taskQueues,
      roles: ['workflows', 'cpu', 'gpu'],
      gpus: [
        { kind: 'cpu', id: '0' },
        { kind: 'cpu', id: '1' },
      ],
      activities: {
        stages: rt.stages,
        artifacts: rt.artifacts,
        services: rt.services,
        logger: silentLogger,
        meter: rt.meter,
        cache: rt.cache,
        records: rt.records,
      },
    });
    const running = workers.map((w) => w.run());
    const app = createApiApp(rt, { client, namespace: 'default' });
    const token = (await rt.tokens.create({ name: 'bench', role: 'operator' })).token;
    const start = async () => {
      const r = await app.api.fetch(
        new Request('http://127.0.0.1/graphql', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify({ query: 'mutation($t: String!) { startPipelineFromText(text: $t) { id } }', variables: { t: text } }),
        }),
      );
      const b = (await r.json()) as { data: { startPipelineFromText: { id: string } }; errors?: unknown[] };
      if (b.errors) throw new Error(JSON.stringify(b.errors));
      return b.data.startPipelineFromText.id;
    };
    stacks.push({ store, rt, workers, running, start });
  }
  const out: PipelineResult[] = stacks.map((s) => ({ store: s.store, ms: [], stages: [], storeMs: [] }));
  try {
    // Alternating, so both stores see the same machine state; the first round warms up (bundle, tfjs, caches).
    for (let r = 1 - warmup; r <= runs; r++) {
      for (const [i, s] of stacks.entries()) {
        const store = s.rt.artifacts instanceof S3ArtifactStore ? s.rt.artifacts : undefined;
        const before = store ? store.stats.sealMs + store.stats.fetchMs : 0;
        const t0 = performance.now();
        const id = await s.start();
        const state = (await client.workflow.getHandle(id).result()) as { status: string; stages: { id: string; startedAt?: string; closedAt?: string }[] };
        const ms = performance.now() - t0;
        if (state.status !== 'COMPLETED') throw new Error(`${s.store}: run ${id} ended ${state.status}`);
        const storeMs = store ? store.stats.sealMs + store.stats.fetchMs - before : 0;
        const stages = Object.fromEntries(
          state.stages.filter((x) => x.startedAt && x.closedAt).map((x) => [x.id, (Date.parse(x.closedAt!) - Date.parse(x.startedAt!)) / 1000]),
        );
        process.stderr.write(
          `  ${s.store}: run ${r}${r === 0 ? ' (warm-up)' : ''} ${(ms / 1000).toFixed(1)} s; stages ${JSON.stringify(stages)}${store ? `; waiting on the bucket ${(storeMs / 1000).toFixed(2)} s` : ''}\n`,
        );
        if (r > 0) {
          out[i]!.ms.push(ms);
          out[i]!.stages.push(stages);
          out[i]!.storeMs.push(storeMs);
        }
      }
    }
  } finally {
    for (const s of stacks) {
      for (const w of s.workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(s.running);
      await s.rt.close();
    }
    await nc.close();
    await connection.close();
    await server.stop();
  }
  return out;
}

async function main(): Promise<void> {
  const weed = await startSeaweed({
    weedPath: resolveWeed({ toolsDir: path.join(root, '.tools'), env: process.env, logger }).path,
    dir: mkdtempSync(path.join(os.tmpdir(), 'capstan-bench-weed-')),
    logger,
  });
  try {
    process.stdout.write(`\nArtifact store round trip — ${machineLine()}\n`);
    process.stdout.write(
      'put = write the folder + hash (+ upload and seal); get = on another host: local path (+ fetch into an empty cache and hash-check), then read\n\n',
    );
    const rows = [
      ...(await roundTrips(weed, 100 * 1024 * 1024, num('big-runs', 1), '100 MB')),
      ...(await roundTrips(weed, 1024, num('small-runs', 1), '1 KB')),
    ];
    const mbps = (bytes: number, ms: number) => (bytes / 2 ** 20 / (ms / 1000)).toFixed(0);
    process.stdout.write('| store | artifact | runs | put (median) | get (median) |\n| --- | --- | --- | --- | --- |\n');
    for (const r of rows) {
      const big = r.bytes > 1024 * 1024;
      const fmt = (ms: number) => (big ? `${ms.toFixed(0)} ms (${mbps(r.bytes, ms)} MB/s)` : `${ms.toFixed(2)} ms`);
      process.stdout.write(`| ${r.store} | ${r.size} | ${r.runs} | ${fmt(r.putMs)} | ${fmt(r.getMs)} |\n`);
    }
    const pruns = num('pipeline-runs', 0);
    if (pruns > 0) {
      const warmup = num('pipeline-warmup', 0) > 0 ? 1 : 0;
      process.stdout.write(
        `\nPipeline end to end (${flags.pipeline}), start → COMPLETED, alternating, ${pruns} runs each${warmup ? ' after a warm-up' : ''}\n\n`,
      );
      const res = await pipelines(weed, pruns, warmup, flags.pipeline!);
      const base = median(res[0]!.ms);
      const stageIds = Object.keys(res[0]!.stages[0] ?? {});
      process.stdout.write(
        `| store | runs (s) | median | vs local | ${stageIds.map((s) => `${s} (median s)`).join(' | ')} | waiting on the bucket (median) |\n`,
      );
      process.stdout.write(`| --- | --- | --- | --- | ${stageIds.map(() => '---').join(' | ')} | --- |\n`);
      for (const r of res) {
        const m = median(r.ms);
        const st = stageIds.map((k) => median(r.stages.map((x) => x[k] ?? NaN)).toFixed(1));
        const wait = median(r.storeMs);
        const waitCell = r.store.startsWith('local') ? '—' : `${(wait / 1000).toFixed(2)} s (${((wait / m) * 100).toFixed(2)} % of the run)`;
        process.stdout.write(
          `| ${r.store} | ${r.ms.map((x) => (x / 1000).toFixed(1)).join(', ')} | ${(m / 1000).toFixed(1)} s | ${(((m - base) / base) * 100).toFixed(1)} % | ${st.join(' | ')} | ${waitCell} |\n`,
        );
      }
    }
  } finally {
    await weed.stop();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
