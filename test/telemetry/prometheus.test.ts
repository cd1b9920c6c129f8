// Prometheus (Debian's `prometheus` package, or PROMETHEUS_PATH) scrapes a real stack every second
// — the API on its own port with the scrape token, the worker on its ops listener — while a small
// pipeline runs, deploys a model and books its cost, and the model serves predictions. Then the
// test asks Prometheus's HTTP API and finds the run's stage durations (as many as the run's
// attempts), its booked cost (equal to what GraphQL reports for the run) and the predictions
// (as many as were made), plus the Temporal SDK's own worker metrics. Also: /metrics refuses a
// scrape without the token, and with telemetry off nothing new is served.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../app/config.js';
import { sdkMetricsEndpoint } from '../../app/worker-metrics.js';
import { parseMoney } from '../../ledger/money.js';
import type { ArtifactStore } from '../../lib/artifacts.js';
import { freeLocalPort } from '../../lib/telemetry/metrics.js';
import { loadTf } from '../../ml/backend.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';
import { fixtureModelStage, makeDatasetArtifact, makeModelArtifact, tempStore } from '../models/fixtures.js';
import { sample, samples } from './prom-text.js';

const TOKEN = 'scrape-token-for-the-test-0123456789';
const PIPELINE = `prom-${Date.now().toString(36)}`;
const MODEL = `prom-model-${Date.now().toString(36)}`;

/** Prometheus from PROMETHEUS_PATH (test/setup/prometheus.ts sets it, installing Debian's package when missing). */
function prometheusBinary(): string {
  const p = process.env.PROMETHEUS_PATH ?? '/usr/bin/prometheus';
  if (!existsSync(p)) throw new Error(`Prometheus not found at ${p}: install Debian's prometheus package (apt-get install prometheus) or set PROMETHEUS_PATH`);
  return p;
}

let fixtures: { store: ArtifactStore; cleanup: () => Promise<void>; dataset: ArtifactRef; model: ArtifactRef };
let stack: TestStack;
let prom: { process: ChildProcess; url: string; dir: string; log: string[] } | undefined;

const fixtureModel = fixtureModelStage('test:fixture-model', () => fixtures);

async function startPrometheus(targets: { api: string; worker: string }): Promise<NonNullable<typeof prom>> {
  const bin = prometheusBinary();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'capstan-prometheus-'));
  const port = await freeLocalPort();
  const job = (name: string, target: string) => `  - job_name: ${name}
    scrape_interval: 1s
    scrape_timeout: 1s
    authorization:
      credentials: ${TOKEN}
    static_configs:
      - targets: ['${target}']
`;
  await writeFile(
    path.join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 1s\nscrape_configs:\n${job('capstan-api', targets.api)}${job('capstan-worker', targets.worker)}`,
  );
  const log: string[] = [];
  const child = spawn(
    bin,
    [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (b: Buffer) => {
    log.push(b.toString());
    if (log.length > 200) log.shift();
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${log.join('').slice(-2000)}`);
        return (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok;
      },
      'Prometheus to be ready',
      60_000,
    );
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return { process: child, url, dir, log };
}

/** The result vector of an instant query. */
async function query(q: string): Promise<{ metric: Record<string, string>; value: number }[]> {
  const res = await fetch(`${prom!.url}/api/v1/query?${new URLSearchParams({ query: q })}`);
  const body = (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  if (body.status !== 'success') throw new Error(`query ${q} failed: ${body.error}`);
  return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
}

beforeAll(async () => {
  const { tf } = await loadTf();
  const t = await tempStore();
  const dataset = await makeDatasetArtifact(t.store);
  const model = await makeModelArtifact(tf, t.store, dataset);
  fixtures = { store: t.store, cleanup: t.cleanup, dataset, model };
  stack = await startTestStack({
    plugins: [fixtureModel, deployStage(), roiLedgerStage()],
    env: { CAPSTAN_METRICS_TOKEN: TOKEN, CAPSTAN_OPS_LISTEN: '127.0.0.1:0' },
    // The Temporal SDK's exporter, appended to the worker's /metrics (as worker.ts does).
    sdkMetrics: await sdkMetricsEndpoint(),
  });
  prom = await startPrometheus({ api: new URL(stack.url).host, worker: `${stack.workerOps!.address.host}:${stack.workerOps!.address.port}` });
}, 180_000);

afterAll(async () => {
  if (prom) {
    const p = prom.process;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await rm(prom.dir, { recursive: true, force: true });
  }
  await stack?.close();
  await fixtures?.cleanup();
});

describe('Prometheus scraping the API and a worker', () => {
  it("finds the run's stage durations, its booked cost as GraphQL reports it, and the predictions made", { timeout: 300_000 }, async () => {
    const start = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, {
      spec: {
        name: PIPELINE,
        stages: [
          { id: 'src', plugin: 'test:fixture-model', params: {} },
          { id: 'deploy', plugin: 'core:deploy', needs: ['src'], params: { modelName: MODEL, latencyRuns: 10, gates: { minTestAccuracy: 0 } } },
          {
            id: 'ledger',
            plugin: 'core:roi-ledger',
            needs: ['deploy'],
            params: {
              priceSheet: { compute: { cpuHour: '36.00', gpuHour: '360.00' }, storage: { gbMonth: '0.02', retentionMonths: 1 } },
              revenue: { kind: 'per-prediction', pricePer1000: '1.00', expectedPredictions: 1000, horizonDays: 30 },
            },
          },
        ],
      },
    });
    expect(start.errors, JSON.stringify(start.errors)).toBeUndefined();
    const id = start.data.startPipeline.id as string;
    const run = await waitFor(
      async () => {
        const r = (await stack.gql(`query($id: ID!) { run(id: $id) { status stages { id plugin status attempts } } }`, { id })).data.run;
        if (r && ['FAILED', 'CANCELLED', 'PAUSED'].includes(r.status)) throw new Error(`run ${id} is ${r.status}`);
        return r?.status === 'COMPLETED' ? r : undefined;
      },
      `run ${id} to complete`,
      180_000,
    );

    // Predictions: 3 through the HTTP route, 2 through GraphQL (each a batch of flat 8×8 samples).
    const sampleRow = () => new Array(64).fill(0);
    const predictor = await stack.token('predictor', 'prom-predictor');
    await waitFor(
      async () => {
        const res = await fetch(`${stack.url}/models/${MODEL}/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${predictor}` },
          body: JSON.stringify({ inputs: [sampleRow(), sampleRow(), sampleRow()] }),
        });
        // Until the model server sees the new production alias (NOT_DEPLOYED): nothing was predicted.
        if (res.status === 404) return false;
        expect(res.status).toBe(200);
        return true;
      },
      'the first prediction',
      60_000,
    );
    const gqlPredict = await stack.gql(
      `query($m: String!, $i: [[Float!]!]!) { predict(model: $m, inputs: $i) { version predictions { label } } }`,
      { m: MODEL, i: [sampleRow(), sampleRow()] },
      predictor,
    );
    expect(gqlPredict.errors, JSON.stringify(gqlPredict.errors)).toBeUndefined();
    expect(gqlPredict.data.predict.predictions).toHaveLength(2);
    const version = String(gqlPredict.data.predict.version);

    // Stage durations: one observation per attempt, by plugin, as the run's stages report them.
    const attempts: Record<string, number> = {};
    for (const s of run.stages) attempts[s.plugin] = (attempts[s.plugin] ?? 0) + s.attempts;
    expect(Object.keys(attempts).sort()).toEqual(['core:deploy', 'core:roi-ledger', 'test:fixture-model']);
    await waitFor(
      async () => {
        const r = await query('sum by (plugin) (capstan_stage_duration_seconds_count{job="capstan-worker"})');
        const got = Object.fromEntries(r.map((x) => [x.metric.plugin!, x.value]));
        return JSON.stringify(got, Object.keys(got).sort()) === JSON.stringify(attempts, Object.keys(attempts).sort());
      },
      "Prometheus to hold the run's stage durations",
      60_000,
      1000,
    );
    const succeeded = await query('sum(capstan_stage_duration_seconds_sum{job="capstan-worker",outcome="succeeded"})');
    expect(succeeded[0]!.value).toBeGreaterThan(0);

    // Booked cost: what Prometheus sums for the pipeline equals the run's cost in GraphQL, to the micro.
    let last = '';
    await waitFor(
      async () => {
        await stack.runtime.outbox.flush({ runId: id });
        const roi = (await stack.gql(`query($id: ID!) { run(id: $id) { roi { cost currency } } }`, { id })).data.run.roi;
        const r = await query(`sum(capstan_ledger_cost_total{job="capstan-api",pipeline="${PIPELINE}",currency="${roi.currency}"})`);
        last = `GraphQL ${roi.cost} ${roi.currency}, Prometheus ${r[0]?.value}`;
        return parseMoney(roi.cost) > 0n && r.length === 1 && BigInt(Math.round(r[0]!.value * 1e6)) === parseMoney(roi.cost);
      },
      "Prometheus's booked cost to equal the run's cost",
      60_000,
      1000,
    ).catch((e: Error) => {
      throw new Error(`${e.message} (last: ${last})`);
    });
    // By resource: the categories the ledger booked (cpu at least).
    const byResource = await query(`sum by (resource) (capstan_ledger_cost_total{pipeline="${PIPELINE}"})`);
    expect(byResource.map((x) => x.metric.resource)).toContain('cpu');

    // Predictions: as many as were made, on the version served; their latency observed once per request.
    await waitFor(
      async () => {
        const n = await query(`sum(capstan_predictions_total{job="capstan-api",model="${MODEL}",version="${version}"})`);
        const requests = await query(`sum(capstan_prediction_duration_seconds_count{model="${MODEL}"})`);
        return n[0]?.value === 5 && requests[0]?.value === 2;
      },
      'Prometheus to count the 5 predictions of 2 requests',
      60_000,
      1000,
    );

    // The run counted by status from visibility, GraphQL operations timed, and the Temporal SDK's own worker metrics.
    await waitFor(
      async () => (await query(`capstan_runs{pipeline="${PIPELINE}",status="COMPLETED"}`))[0]?.value === 1,
      'the completed run in capstan_runs',
      60_000,
      1000,
    );
    expect((await query('sum(capstan_graphql_request_duration_seconds_count{operationType="mutation"})'))[0]!.value).toBeGreaterThanOrEqual(1);
    expect((await query('count({job="capstan-worker",__name__=~"temporal_.+"})'))[0]!.value).toBeGreaterThan(0);
    expect((await query('up{job="capstan-api"}'))[0]!.value).toBe(1);
    expect((await query('up{job="capstan-worker"}'))[0]!.value).toBe(1);
  });

  it('refuses /metrics without the scrape token, on the API port and on the ops listener', async () => {
    const ops = stack.workerOps!.url;
    for (const base of [stack.url, ops]) {
      const none = await fetch(`${base}/metrics`);
      expect(none.status, base).toBe(401);
      expect(none.headers.get('www-authenticate')).toContain('Bearer');
      expect((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong-token' } })).status, base).toBe(401);
      // An API token is not a scrape token.
      expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${stack.adminToken}` } })).status, base).toBe(401);
      const ok = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(ok.status, base).toBe(200);
      expect(ok.headers.get('content-type')).toContain('text/plain');
      const text = await ok.text();
      expect(text, base).toContain(base === ops ? 'capstan_worker_up' : 'capstan_predictions_total');
    }
    // GraphQL errors by phase, under Capstan's name (no per-path series).
    expect((await stack.gql('{ noSuchField }')).errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    const apiText = (await stack.apiMetrics!()).body;
    const errors = samples(apiText, 'capstan_graphql_errors_total').filter((x) => x.labels.phase === 'validate');
    expect(errors.reduce((n, x) => n + x.value, 0)).toBeGreaterThanOrEqual(1);
    expect(errors.every((x) => x.labels.path === undefined)).toBe(true);
    // The worker's scrape carries the SDK's metrics too (its own listener stays on loopback).
    const text = await (await fetch(`${ops}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(sample(text, 'capstan_worker_up', { roles: 'cpu,gpu,workflows' })).toBe(1);
    expect(text).toMatch(/^temporal_\w+/m);
  });

  it('exports every metric ops/metrics.json promises the dashboard and the alerts, with its type and labels, under its job', async () => {
    const contract = JSON.parse(await readFile(path.join(import.meta.dirname, '..', '..', 'ops', 'metrics.json'), 'utf8')) as {
      metrics: { name: string; type: string; job: 'capstan-api' | 'capstan-worker'; labels: string[] }[];
      sdk: { name: string; type: string; labels: string[] }[];
    };
    const scrape = async (url: string) => (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    const texts = { 'capstan-api': await scrape(stack.url), 'capstan-worker': await scrape(stack.workerOps!.url) };
    /** What `# TYPE` says of each name in a scrape: prom-client declares every registered metric, with samples or not. */
    const declared = (text: string) => new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const problems: string[] = [];
    const check = (job: keyof typeof texts, m: { name: string; type: string; labels: string[] }) => {
      const type = declared(texts[job]).get(m.name);
      if (type !== m.type) return void problems.push(`${m.name}: ${type ? `type ${type}, not ${m.type}` : 'not exported'} on ${job}`);
      const suffixes = m.type === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
      for (const x of suffixes.flatMap((suffix) => samples(texts[job], m.name + suffix))) {
        const names = Object.keys(x.labels).filter((l) => l !== 'le');
        const missing = m.labels.filter((l) => !names.includes(l));
        // The SDK's series carry more labels than the few the dashboard relies on (the contract lists those).
        const extra = 'job' in m ? names.filter((l) => !m.labels.includes(l)) : [];
        if (missing.length || extra.length) problems.push(`${m.name}{${names.join(',')}} on ${job}: missing [${missing}], not in the contract [${extra}]`);
      }
    };
    for (const m of contract.metrics) check(m.job, m);
    for (const m of contract.sdk) check('capstan-worker', m);
    expect(problems).toEqual([]);
    expect(contract.metrics.length + contract.sdk.length).toBeGreaterThan(25);
  });
});

describe('with telemetry off', () => {
  let off: TestStack;
  beforeAll(async () => {
    off = await startTestStack({ plugins: [fixtureModel] });
  });
  afterAll(async () => {
    await off?.close();
  });

  it('serves no metrics: no ops listener, and /metrics on the API port is an unknown path', async () => {
    const config = loadConfig({ CAPSTAN_DATA_DIR: os.tmpdir() }, os.tmpdir());
    expect(config.telemetry).toMatchObject({ metrics: false, tracing: false });
    expect(config.telemetry.opsListen).toBeUndefined();
    expect(off.workerOps).toBeUndefined();
    expect(off.workerTelemetry).toBeUndefined();
    expect(off.apiMetrics).toBeUndefined();
    // As any path the API does not serve: 401 without a token, 404 with one.
    expect((await fetch(`${off.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${off.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(401);
    const known = await fetch(`${off.url}/metrics`, { headers: { authorization: `Bearer ${off.adminToken}` } });
    expect(known.status).toBe(404);
    expect(((await known.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
  });
});
