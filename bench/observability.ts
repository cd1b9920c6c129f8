// What telemetry costs: the stage gap and the prediction latency with tracing and metrics on,
// against the same with telemetry off, in one run on one Temporal dev server.
//  - off: no ops listener, no metrics registries, no tracer (what a stack without CAPSTAN_OPS_LISTEN
//    and OTEL_* runs);
//  - on:  tracing exported over OTLP to a real Jaeger (every span: the GraphQL operation, the client
//    start, the workflow, each activity and stage attempt, artifact puts), the worker's and the API's
//    metrics (the run sink, stage histograms, yoga's plugin, prediction counters, the Temporal SDK's
//    exporter), and Prometheus's load played by a scraper reading both /metrics every --scrape-ms.
// Each mode runs in its own process (tracing is process-wide), on its own task queues; modes are
// interleaved round by round (off/on, then on/off, …) so both see the same machine, and the medians
// of the rounds are printed. Logs are JSON lines in both modes (they are not a switch).
// Usage: npm run bench:observability -- [--rounds 4] [--runs 6] [--stages 20] [--predictions 400] [--scrape-ms 1000] [--on tracing,metrics] [--collector jaeger|discard]
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { createNodeHandler } from '../api/http.js';
import { createApiApp } from '../app/api.js';
import { loadConfig } from '../app/config.js';
import { createRuntime } from '../app/runtime.js';
import { clientTracing } from '../app/temporal.js';
import { createWorkerTelemetry, sdkMetricsEndpoint, sdkTelemetryOptions } from '../app/worker-metrics.js';
import { createWorkers } from '../app/workers.js';
import { JAEGER_VERSION, resolveJaeger, startJaeger } from '../dev/jaeger.js';
import { startDevServer } from '../dev/dev-server.js';
import { resolveTemporalCli } from '../dev/temporal-cli.js';
import { createConsoleLogger, silentLogger } from '../lib/logger.js';
import { startOpsServer } from '../lib/telemetry/ops-server.js';
import { startTracing } from '../lib/telemetry/tracing.js';
import { loadTf } from '../ml/backend.js';
import { deployStage } from '../plugins/core/deploy/index.js';
import { StageRegistry } from '../plugins/registry.js';
import { fixtureModelStage, makeDatasetArtifact, makeModelArtifact, tempStore } from '../test/models/fixtures.js';
import type { RunState } from '../workflows/types.js';
import { machineLine, median, quantile } from './machine.js';
import { trivialStage as trivial } from './trivial-stage.js';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    runs: { type: 'string', default: '6' },
    stages: { type: 'string', default: '20' },
    predictions: { type: 'string', default: '400' },
    'scrape-ms': { type: 'string', default: '1000' },
    /** What "on" turns on: tracing, metrics, or both (to see which costs what). */
    on: { type: 'string', default: 'tracing,metrics' },
    /** Where spans go: a real Jaeger on this machine, or a receiver that answers 200 and discards them (the tracing backend's own CPU left out). */
    collector: { type: 'string', default: 'jaeger' },
    /** Child mode (internal): on | off, with the server's and Jaeger's addresses. */
    mode: { type: 'string' },
    address: { type: 'string' },
    otlp: { type: 'string' },
    round: { type: 'string', default: '0' },
  },
});
const count = (name: 'rounds' | 'runs' | 'stages' | 'predictions' | 'scrape-ms'): number => {
  const n = Number(flags[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive whole number, got ${flags[name]}`);
  return n;
};
const self = fileURLToPath(import.meta.url);
const root = path.resolve(path.dirname(self), '..');
const TOKEN = 'bench-scrape-token-0123456789abcdef';

/** What one mode measured in one process. */
interface Measured {
  mode: 'on' | 'off';
  /** Stage end → next stage start, ms (every gap of every run). */
  gaps: number[];
  /** A pipeline of --stages trivial stages, startPipeline → completed, ms. */
  perRun: number[];
  /** One prediction (batch 1) through POST /models/:name/predict over loopback HTTP, ms. */
  predictHttp: number[];
  /** One prediction (batch 1) through the GraphQL `predict` query, ms. */
  predictGql: number[];
  scrapes: number;
}

async function child(mode: 'on' | 'off'): Promise<Measured> {
  const parts = new Set(mode === 'on' ? (flags.on ?? '').split(',') : []);
  const traced = parts.has('tracing');
  const metered = parts.has('metrics');
  const address = flags.address!;
  const dir = await mkdtemp(path.join(os.tmpdir(), `capstan-bench-obs-${mode}-`));
  const env: Record<string, string> = {
    CAPSTAN_DATA_DIR: dir,
    CAPSTAN_TASK_QUEUE: `obs-${mode}-${flags.round}-${Date.now().toString(36)}`,
    // One token predicts back to back here: the per-token rate limit is not what is measured.
    CAPSTAN_PREDICT_RATE_PER_MIN: '10000000',
    CAPSTAN_PREDICT_BURST: '1000000',
  };
  if (metered) Object.assign(env, { CAPSTAN_OPS_LISTEN: '127.0.0.1:0', CAPSTAN_METRICS_TOKEN: TOKEN });
  if (traced) {
    // As an operator sets them: the OTLP exporter reads OTEL_EXPORTER_OTLP_* from the process's environment.
    Object.assign(process.env, { OTEL_EXPORTER_OTLP_ENDPOINT: flags.otlp!, OTEL_SERVICE_NAME: 'capstan-bench' });
  }
  // As worker.ts and api/server.ts do: tracing before any client or worker, the SDK's exporter before any connection.
  const tracing = traced ? await startTracing({ enabled: true, defaultServiceName: 'capstan-bench', env: process.env }) : undefined;
  if (traced && !tracing) throw new Error('tracing did not start');
  const sdk = metered ? await sdkMetricsEndpoint() : undefined;
  Runtime.install({ logger: new DefaultLogger('ERROR'), ...(sdk ? { telemetryOptions: sdkTelemetryOptions(sdk) } : {}) });
  const logger = createConsoleLogger({ name: 'bench', level: 'error', format: 'json' });

  // A model trained beforehand (a small MLP on 8×8 synthetic rows), handed over by a stage, then deployed.
  const { tf } = await loadTf();
  const fixtures = await tempStore();
  const dataset = await makeDatasetArtifact(fixtures.store);
  const model = await makeModelArtifact(tf, fixtures.store, dataset);
  const fixtureModel = fixtureModelStage('bench:fixture-model', () => ({ store: fixtures.store, model, dataset }));

  const stages = new StageRegistry().register(trivial).register(fixtureModel).register(deployStage()).freeze();
  const config = loadConfig(env, dir);
  const rt = await createRuntime(config, logger, { stages });
  const telemetry = metered ? createWorkerTelemetry({ roles: ['workflows', 'cpu'], ...(sdk ? { sdk } : {}), logger }) : undefined;
  const nc = await NativeConnection.connect({ address });
  const workers = await createWorkers({
    connection: nc,
    namespace: 'default',
    taskQueues: config.taskQueues,
    roles: ['workflows', 'cpu'],
    activities: { stages, artifacts: rt.artifacts, services: rt.services, logger: silentLogger },
    activitySlots: 8,
    ...(telemetry ? { metrics: telemetry.metrics } : {}),
  });
  const running = workers.map((w) => w.run());
  const workerOps = telemetry
    ? await startOpsServer({ listen: { host: '127.0.0.1', port: 0 }, metricsToken: TOKEN, metrics: telemetry.render, logger })
    : undefined;
  const connection = await Connection.connect({ address });
  const client = new Client({ connection, ...clientTracing() });
  const app = createApiApp(rt, { client, namespace: 'default', modelRefreshMs: 500, ...(metered ? { metrics: {} } : {}) });
  const ops = metered && app.metrics ? { metricsToken: TOKEN, metrics: app.metrics } : undefined;
  const server = createServer(createNodeHandler(app.api, { maxBodyBytes: config.api.maxBodyBytes, logger, ...(ops ? { ops } : {}) }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const admin = (await rt.tokens.create({ name: 'bench', role: 'admin' })).token;
  const predictor = (await rt.tokens.create({ name: 'bench-predictor', role: 'predictor' })).token;
  const gql = async (query: string, variables: Record<string, unknown>, token = admin) => {
    const r = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    const b = (await r.json()) as { data: any; errors?: unknown[] };
    if (b.errors) throw new Error(JSON.stringify(b.errors));
    return b.data;
  };
  const start = async (spec: unknown) =>
    (await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec })).startPipeline.id as string;

  // Prometheus's load: both /metrics read every --scrape-ms while everything below runs.
  let scrapes = 0;
  const scrape = async () => {
    for (const base of [url, workerOps!.url]) {
      const r = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      if (!r.ok) throw new Error(`scrape of ${base} answered ${r.status}`);
      await r.text();
    }
    scrapes++;
  };
  const scraper = metered ? setInterval(() => void scrape().catch((e: unknown) => console.error(e)), count('scrape-ms')) : undefined;

  const STAGES = count('stages');
  const spec = (name: string) => ({ name, stages: Array.from({ length: STAGES }, (_, i) => ({ id: `s${i}`, plugin: 'bench:trivial' })) });
  await client.workflow.getHandle(await start(spec('warmup'))).result();
  const gaps: number[] = [];
  const perRun: number[] = [];
  for (let r = 0; r < count('runs'); r++) {
    const t0 = performance.now();
    const state = (await client.workflow.getHandle(await start(spec('gap'))).result()) as RunState;
    perRun.push(performance.now() - t0);
    for (let i = 1; i < state.stages.length; i++) gaps.push((state.stages[i]!.metrics.startedAt as number) - (state.stages[i - 1]!.metrics.endedAt as number));
  }

  // Predictions: deploy, wait until served, warm up, then one at a time (batch 1), HTTP then GraphQL.
  const modelName = `obs-${mode}`;
  const deployed = (await client.workflow
    .getHandle(
      await start({
        name: 'deploy',
        stages: [
          { id: 'src', plugin: 'bench:fixture-model', params: {} },
          { id: 'deploy', plugin: 'core:deploy', needs: ['src'], params: { modelName, latencyRuns: 10, gates: { minTestAccuracy: 0 } } },
        ],
      }),
    )
    .result()) as RunState;
  if (deployed.status !== 'COMPLETED') throw new Error(`the deploy run ended ${deployed.status}`);
  const row = [new Array(64).fill(0.5)];
  const predictHttp = async () => {
    const res = await fetch(`${url}/models/${modelName}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${predictor}` },
      body: JSON.stringify({ inputs: row }),
    });
    const body = await res.text();
    return res.status === 200 ? body : undefined;
  };
  for (let t0 = Date.now(); !(await predictHttp()); ) {
    if (Date.now() - t0 > 60_000) throw new Error(`${modelName} was not served within 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const N = count('predictions');
  const timed = async (fn: () => Promise<unknown>) => {
    const out: number[] = [];
    for (let i = 0; i < 50; i++) await fn();
    for (let i = 0; i < N; i++) {
      const t = performance.now();
      if (!(await fn())) throw new Error('a prediction failed');
      out.push(performance.now() - t);
    }
    return out;
  };
  const predictGraphql = () => gql(`query($m: String!, $i: [[Float!]!]!) { predict(model: $m, inputs: $i) { version } }`, { m: modelName, i: row }, predictor);
  const http = await timed(predictHttp);
  const graphql = await timed(predictGraphql);

  if (scraper) clearInterval(scraper);
  // Spans still buffered are exported inside the measured process (their cost is part of "on").
  await tracing?.spanProcessor.forceFlush();
  for (const w of workers) w.shutdown();
  await Promise.allSettled(running);
  server.closeAllConnections();
  server.close();
  await workerOps?.close();
  await app.close();
  await connection.close();
  await nc.close();
  await rt.close();
  await tracing?.shutdown();
  await fixtures.cleanup();
  await rm(dir, { recursive: true, force: true });
  return { mode, gaps, perRun, predictHttp: http, predictGql: graphql, scrapes };
}

/** Runs one mode in a fresh process; its Measured (the last line of its stdout). */
function runChild(mode: 'on' | 'off', round: number, address: string, otlp: string): Promise<Measured> {
  const args = ['--import', 'tsx', self, '--mode', mode, '--round', String(round), '--address', address, '--otlp', otlp];
  for (const k of ['runs', 'stages', 'predictions', 'scrape-ms', 'on'] as const) args.push(`--${k}`, String(flags[k]));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: root });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('error', reject);
    p.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${mode} round ${round} exited ${code}: ${out.slice(-2000)}`));
      const last = out.trim().split('\n').at(-1) ?? '';
      try {
        resolve(JSON.parse(last) as Measured);
      } catch {
        reject(new Error(`${mode} round ${round} printed no result: ${out.slice(-2000)}`));
      }
    });
  });
}

async function main(): Promise<void> {
  const logger = createConsoleLogger({ name: 'bench', level: 'warn', format: 'text' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'capstan-bench-obs-'));
  const cli = await resolveTemporalCli({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
  const server = await startDevServer({ cliPath: cli.path, dbFile: path.join(dir, 'temporal.db'), logger });
  if (flags.collector !== 'jaeger' && flags.collector !== 'discard') throw new Error(`--collector must be jaeger or discard, got ${flags.collector}`);
  const jaegerBin = resolveJaeger({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
  const jaeger = await startJaeger({ jaegerPath: jaegerBin.path, dir: path.join(dir, 'jaeger'), logger });
  // The discarding receiver: reads each OTLP request to its end and answers 200 (an empty ExportTraceServiceResponse).
  let discarded = 0;
  const discard = createServer((req, res) => {
    req.on('data', (b: Buffer) => (discarded += b.length));
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end());
  });
  await new Promise<void>((r) => discard.listen(0, '127.0.0.1', r));
  const otlp = flags.collector === 'jaeger' ? jaeger.otlpEndpoint : `http://127.0.0.1:${(discard.address() as { port: number }).port}`;
  const rounds = count('rounds');
  const results: Record<'on' | 'off', Measured[]> = { on: [], off: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      const order: ('on' | 'off')[] = r % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
      for (const mode of order) {
        const m = await runChild(mode, r, server.address, otlp);
        results[mode].push(m);
        console.error(
          `round ${r + 1}/${rounds} ${mode}: gap median ${median(m.gaps).toFixed(2)} ms, predict HTTP p50 ${median(m.predictHttp).toFixed(3)} ms, GraphQL p50 ${median(m.predictGql).toFixed(3)} ms${m.scrapes ? `, ${m.scrapes} scrapes` : ''}`,
        );
      }
    }
    if (flags.on?.includes('tracing') && flags.collector === 'discard') {
      if (discarded === 0) throw new Error('the discarding receiver got no spans: tracing did not export');
      console.error(`the discarding receiver read ${(discarded / 1e6).toFixed(1)} MB of OTLP from the "on" runs`);
    } else if (flags.on?.includes('tracing')) {
      // "on" really exported: Jaeger holds the runs' traces (a GraphQL operation's, each with its stages').
      let traces: { spans: unknown[] }[] = [];
      // Jaeger indexes what it received within a moment; asked for up to 10 s.
      for (let t0 = Date.now(); traces.length === 0 && Date.now() - t0 < 10_000; await new Promise((r) => setTimeout(r, 500))) {
        const res = await fetch(`${jaeger.queryUrl}/api/traces?${new URLSearchParams({ service: 'capstan-bench', limit: '10000' })}`);
        traces = ((await res.json()) as { data: { spans: unknown[] }[] | null }).data ?? [];
      }
      if (traces.length === 0) throw new Error('Jaeger received no trace from the "on" runs: tracing did not export');
      console.error(`Jaeger received ${traces.length} traces, ${traces.reduce((n, t) => n + t.spans.length, 0)} spans from the "on" runs`);
    }
  } finally {
    discard.close();
    await jaeger.stop();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
  /** The median over rounds of each round's statistic. */
  const over = (mode: 'on' | 'off', pick: (m: Measured) => number[], stat: (xs: number[]) => number) => median(results[mode].map((m) => stat(pick(m))));
  const p50 = (xs: number[]) => median(xs);
  const p99 = (xs: number[]) => quantile(xs, 0.99);
  const line = (label: string, pick: (m: Measured) => number[], stat: (xs: number[]) => number, digits: number) => {
    const off = over('off', pick, stat);
    const on = over('on', pick, stat);
    const pct = ((on - off) / off) * 100;
    console.log(
      `${label.padEnd(44)} off ${off.toFixed(digits).padStart(8)} ms   on ${on.toFixed(digits).padStart(8)} ms   ${pct >= 0 ? '+' : ''}${pct.toFixed(1)} %`,
    );
  };
  console.log(`machine: ${machineLine()}`);
  console.log(
    `temporal: ${cli.version.split('\n')[0]} (dev server, SQLite file); spans to ${flags.collector === 'jaeger' ? `jaeger ${JAEGER_VERSION} on this machine (OTLP/HTTP, in-memory)` : 'a receiver that discards them'}; worker and API in one process per mode`,
  );
  console.log(
    `${rounds} rounds × (off, on), interleaved; per round ${flags.runs} pipelines of ${flags.stages} trivial stages and ${flags.predictions} batch-1 predictions per path; on: ${flags.on}${flags.on?.includes('metrics') ? `, /metrics scraped every ${flags['scrape-ms']} ms` : ''}; medians over rounds`,
  );
  line('stage gap, median', (m) => m.gaps, p50, 2);
  line('stage gap, p99', (m) => m.gaps, p99, 2);
  line(`pipeline of ${flags.stages} stages end to end, median`, (m) => m.perRun, p50, 1);
  line('prediction, HTTP /models/:name/predict, p50', (m) => m.predictHttp, p50, 3);
  line('prediction, HTTP, p99', (m) => m.predictHttp, p99, 3);
  line('prediction, GraphQL predict, p50', (m) => m.predictGql, p50, 3);
  line('prediction, GraphQL predict, p99', (m) => m.predictGql, p99, 3);
}

if (flags.mode) {
  if (flags.mode !== 'on' && flags.mode !== 'off') throw new Error(`--mode must be on or off, got ${flags.mode}`);
  child(flags.mode).then(
    (m) => {
      process.stdout.write(`${JSON.stringify(m)}\n`);
      process.exit(0);
    },
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
} else {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
