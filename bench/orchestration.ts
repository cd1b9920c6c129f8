// Orchestration overhead of Capstan on a real Temporal dev server:
//  1. per-stage gap (one stage's end → the next stage's start) for a pipeline of N trivial stages,
//     against calling the same stage functions in-process;
//  2. how many pipelines per second startPipeline accepts (GraphQL → Temporal start).
// Usage: npx tsx bench/orchestration.ts [--stages 20] [--runs 5] [--starts 200] [--concurrency 8]
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createApiApp } from '../app/api.js';
import { loadConfig } from '../app/config.js';
import { createRuntime } from '../app/runtime.js';
import { createWorkers } from '../app/workers.js';
import { startDevServer } from '../dev/dev-server.js';
import { resolveTemporalCli } from '../dev/temporal-cli.js';
import { createConsoleLogger, silentLogger } from '../lib/logger.js';
import type { StageContext } from '../plugins/contract.js';
import { StageRegistry } from '../plugins/registry.js';
import type { RunState } from '../workflows/types.js';
import { bareChainWorkflow } from './bare-workflow.js';
import { machineLine, median, quantile } from './machine.js';
import { trivialStage as trivial } from './trivial-stage.js';

const { values: flags } = parseArgs({
  options: {
    stages: { type: 'string', default: '20' },
    runs: { type: 'string', default: '5' },
    starts: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '8' },
  },
});
const count = (name: keyof typeof flags): number => {
  const n = Number(flags[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive whole number, got ${flags[name]}`);
  return n;
};
const STAGES = count('stages');
const RUNS = count('runs');
const STARTS = count('starts');
const CONCURRENCY = count('concurrency');

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const logger = createConsoleLogger({ name: 'bench', level: 'warn' });
  const root = path.resolve(import.meta.dirname, '..');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-bench-'));
  const cli = await resolveTemporalCli({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
  const server = await startDevServer({ cliPath: cli.path, dbFile: path.join(dir, 'temporal.db'), logger });
  const stages = new StageRegistry().register(trivial).freeze();
  const config = loadConfig({ CAPSTAN_DATA_DIR: dir, CAPSTAN_TASK_QUEUE: 'bench' }, dir);
  // The API logs unexpected errors (an INTERNAL answer would otherwise be unexplained).
  const rt = await createRuntime(config, createConsoleLogger({ name: 'bench-api', level: 'error' }), { stages });
  const taskQueues = config.taskQueues;
  const nc = await NativeConnection.connect({ address: server.address });
  const workers = await createWorkers({
    connection: nc,
    namespace: 'default',
    taskQueues,
    roles: ['workflows', 'cpu'],
    activities: { stages, artifacts: rt.artifacts, services: rt.services, logger: silentLogger },
    activitySlots: 8,
  });
  const running = workers.map((w) => w.run());
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection });
  const app = createApiApp(rt, { client, namespace: 'default' });
  const api = app.api;
  // Through the API as a client would: over loopback, with an operator token (each request is authenticated).
  const token = (await rt.tokens.create({ name: 'bench', role: 'operator' })).token;
  const gql = async (query: string, variables: Record<string, unknown>) => {
    const r = await api.fetch(
      new Request('http://127.0.0.1/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      }),
    );
    const b = (await r.json()) as { data: any; errors?: unknown[] };
    if (b.errors) throw new Error(JSON.stringify(b.errors));
    return b.data;
  };
  const spec = (name: string) => ({ name, stages: Array.from({ length: STAGES }, (_, i) => ({ id: `s${i}`, plugin: 'bench:trivial' })) });

  // Warm-up: bundle loaded, connections open, first workflow task done.
  await client.workflow
    .getHandle((await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec('warmup') })).startPipeline.id)
    .result();

  // 1. Per-stage gap through Temporal, beside its floor: a bare workflow running the same number of
  //    no-op activities on the workflow's own task queue (the server hands the next activity task
  //    back with the workflow task's completion) and on a separate queue (as gpu stages run on
  //    <prefix>-gpu). Interleaved run by run, so all three see the same load on a shared machine.
  const noop = async () => {
    const startedAt = performance.timeOrigin + performance.now();
    return { startedAt, endedAt: performance.timeOrigin + performance.now() };
  };
  const bareWorkers = [
    await Worker.create({
      connection: nc,
      namespace: 'default',
      taskQueue: 'bare',
      workflowsPath: fileURLToPath(new URL('./bare-workflow.ts', import.meta.url)),
      activities: { noop },
    }),
    await Worker.create({ connection: nc, namespace: 'default', taskQueue: 'bare-activities', activities: { noop } }),
  ];
  const bareRunning = bareWorkers.map((w) => w.run());
  const bareRun = async (activityQueue: string, r: number) => {
    const t = await client.workflow.execute(bareChainWorkflow, {
      taskQueue: 'bare',
      workflowId: `bare-${activityQueue}-${r}-${Date.now()}`,
      args: [{ n: STAGES, taskQueue: activityQueue }],
    });
    const out: number[] = [];
    for (let i = 1; i < t.length; i++) out.push(t[i]!.startedAt - t[i - 1]!.endedAt);
    return out;
  };
  await bareRun('bare', -1); // warm-up
  await bareRun('bare-activities', -1);
  const gaps: number[] = [];
  const perRun: number[] = [];
  const bareSame: number[] = [];
  const bareSeparate: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    const id = (await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec('gap') })).startPipeline.id;
    const state = (await client.workflow.getHandle(id).result()) as RunState;
    perRun.push(performance.now() - t0);
    for (let i = 1; i < state.stages.length; i++) gaps.push((state.stages[i]!.metrics.startedAt as number) - (state.stages[i - 1]!.metrics.endedAt as number));
    bareSame.push(...(await bareRun('bare', r)));
    bareSeparate.push(...(await bareRun('bare-activities', r)));
  }
  for (const w of bareWorkers) w.shutdown();
  await Promise.allSettled(bareRunning);

  // The same stage functions called in-process.
  const inproc: number[] = [];
  const ctx = { signal: new AbortController().signal } as StageContext;
  for (let r = 0; r < RUNS; r++) {
    let prevEnd: number | undefined;
    for (let i = 0; i < STAGES; i++) {
      const t = performance.now();
      if (prevEnd !== undefined) inproc.push(t - prevEnd);
      await trivial.run(ctx, {}, {});
      prevEnd = performance.now();
    }
  }

  // 2. startPipeline throughput (accepted = Temporal acknowledged the start): first while this
  //    process's workers also run the started pipelines, then with the workers stopped (API + server only).
  const small = { name: 'throughput', stages: [{ id: 's0', plugin: 'bench:trivial' }] };
  /** Starts per second over 3 rounds of STARTS calls, CONCURRENCY at a time. */
  const measureStarts = async (startOne: (round: number, i: number) => Promise<unknown>) => {
    const out: number[] = [];
    for (let r = 0; r < 3; r++) {
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < STARTS) await startOne(r, next++);
        }),
      );
      out.push(STARTS / ((performance.now() - t0) / 1000));
    }
    return out;
  };
  const viaApi = () => gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: small });
  const rates = await measureStarts(viaApi);
  for (const w of workers) w.shutdown();
  await Promise.allSettled(running);
  const ratesNoWorkers = await measureStarts(viaApi);
  // The floor: the same workflow started straight through the Temporal client (no GraphQL, no validation).
  const { resolveSpec } = await import('../engine/spec.js');
  const { runPipelineWorkflow } = await import('../workflows/index.js');
  const input = resolveSpec(small, stages, { taskQueues });
  const ratesRaw = await measureStarts((r, i) =>
    client.workflow.start(runPipelineWorkflow, { taskQueue: taskQueues.workflows, workflowId: `raw-${r}-${i}`, args: [input] }),
  );

  const f = (x: number) => x.toFixed(1);
  console.log(`machine: ${machineLine()}`);
  console.log(`temporal: ${cli.version.split('\n')[0]} (dev server, SQLite file); worker and API in this process`);
  console.log(
    `stage gap through Temporal (${RUNS} runs × ${STAGES - 1} gaps): median ${f(median(gaps))} ms, p99 ${f(quantile(gaps, 0.99))} ms, max ${f(Math.max(...gaps))} ms`,
  );
  console.log(
    `stage gap in-process (same functions):        median ${(median(inproc) * 1000).toFixed(1)} µs, p99 ${(quantile(inproc, 0.99) * 1000).toFixed(1)} µs`,
  );
  console.log(`bare workflow, ${STAGES} no-op activities on its own queue:     median gap ${f(median(bareSame))} ms, p99 ${f(quantile(bareSame, 0.99))} ms`);
  console.log(
    `bare workflow, ${STAGES} no-op activities on a separate queue:  median gap ${f(median(bareSeparate))} ms, p99 ${f(quantile(bareSeparate, 0.99))} ms`,
  );
  console.log(`Capstan's gap / the best bare gap: ${(median(gaps) / Math.min(median(bareSame), median(bareSeparate))).toFixed(2)}×`);
  console.log(`pipeline of ${STAGES} trivial stages end to end: median ${f(median(perRun))} ms`);
  console.log(
    `startPipeline accepted, workers running the pipelines too: median ${f(median(rates))} pipelines/s (3 rounds of ${STARTS}, concurrency ${CONCURRENCY}; rounds ${rates.map(f).join(', ')})`,
  );
  console.log(
    `startPipeline accepted, API + server only:               median ${f(median(ratesNoWorkers))} pipelines/s (rounds ${ratesNoWorkers.map(f).join(', ')})`,
  );
  console.log(`raw client.workflow.start, same workflow (the floor):     median ${f(median(ratesRaw))} starts/s (rounds ${ratesRaw.map(f).join(', ')})`);
  await app.close();
  await connection.close();
  await nc.close();
  await rt.close();
  await server.stop();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
