import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { inject } from 'vitest';
import type { Api } from '../../api/app.js';
import { createNodeHandler } from '../../api/http.js';
import type { Role } from '../../auth/roles.js';
import { createApiApp } from '../../app/api.js';
import { loadConfig } from '../../app/config.js';
import { createRuntime, type Runtime as CapstanRuntime } from '../../app/runtime.js';
import { clientTracing } from '../../app/temporal.js';
import { createWorkerTelemetry, sdkTelemetryOptions, type SdkMetricsEndpoint, type WorkerTelemetry } from '../../app/worker-metrics.js';
import { createWorkers, runWorkers } from '../../app/workers.js';
import { startOpsServer, type MetricsText, type OpsServer } from '../../lib/telemetry/ops-server.js';
import type { Engine } from '../../engine/index.js';
import type { ArtifactStore } from '../../lib/artifacts.js';
import type { Db } from '../../lib/db/types.js';
import { silentLogger, type Logger } from '../../lib/logger.js';
import type { StagePlugin } from '../../plugins/contract.js';
import { StageRegistry } from '../../plugins/registry.js';

export interface TestStack {
  client: Client;
  connection: Connection;
  api: Api;
  engine: Engine;
  /** Base URL of the API served over real HTTP. */
  url: string;
  runtime: CapstanRuntime;
  stages: StageRegistry;
  artifacts: ArtifactStore;
  db: Db;
  dataDir: string;
  taskQueues: { workflows: string; cpu: string; gpu: string };
  workers: Worker[];
  /** An admin token of this stack (what gql sends unless told otherwise). */
  adminToken: string;
  /** A new token with this role. */
  token(role: Role, name?: string): Promise<string>;
  /** GraphQL over HTTP with a token (the admin's by default; null sends none). */
  gql<T = any>(
    query: string,
    variables?: Record<string, unknown>,
    token?: string | null,
  ): Promise<{ data: T; errors?: { message: string; extensions?: any }[] }>;
  /** Stops the workers (e.g. to simulate a lost worker) — the stack stays up otherwise. */
  stopWorkers(): Promise<void>;
  startWorkers(): Promise<void>;
  /** With CAPSTAN_OPS_LISTEN in `env`: the workers' metrics and their ops listener (as worker.ts starts them). */
  workerTelemetry?: WorkerTelemetry;
  workerOps?: OpsServer;
  /** With metrics on (CAPSTAN_METRICS_TOKEN or CAPSTAN_OPS_LISTEN): the API's /metrics text (served on `url` when a token is set). */
  apiMetrics?: () => Promise<MetricsText>;
  close(): Promise<void>;
}

export interface TestStackOptions {
  /** The stage plugins of this stack (instead of the built-ins). */
  plugins: StagePlugin<any>[];
  /** A Temporal server of the test's own (default: the run's shared dev server). */
  temporalAddress?: string;
  /** Where the API and runtime log (silent by default). */
  logger?: Logger;
  /** Extra configuration environment (e.g. CAPSTAN_CORS_ORIGINS, CAPSTAN_METRICS_TOKEN, CAPSTAN_OPS_LISTEN). */
  env?: Record<string, string>;
  /**
   * The Temporal SDK's Prometheus exporter (worker.ts turns it on with the ops listener): installed
   * with the SDK's runtime, so it must be the first stack of its test file.
   */
  sdkMetrics?: SdkMetricsEndpoint;
}

/** A real stack for one test file, built by the composition root: its own task queues on the shared dev server, workers, and the API over HTTP. */
let runtimeInstalled = false;

export async function startTestStack(o: TestStackOptions): Promise<TestStack> {
  if (!runtimeInstalled) {
    // Keep the SDK's per-worker INFO lines out of test output.
    Runtime.install({ logger: new DefaultLogger('ERROR'), ...(o.sdkMetrics ? { telemetryOptions: sdkTelemetryOptions(o.sdkMetrics) } : {}) });
    runtimeInstalled = true;
  } else if (o.sdkMetrics) {
    throw new Error("startTestStack: sdkMetrics needs the SDK's runtime installed by this stack: start it first in its test file");
  }
  const address = o.temporalAddress ?? inject('temporalAddress');
  const namespace = inject('temporalNamespace');
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-test-'));
  const stages = new StageRegistry();
  for (const p of o.plugins) stages.register(p);
  stages.freeze();
  const q = `t-${randomBytes(4).toString('hex')}`;
  const python = inject('pythonPath');
  const config = loadConfig(
    {
      CAPSTAN_DATA_DIR: dataDir,
      CAPSTAN_TASK_QUEUE: q,
      CAPSTAN_TEMPORAL_UI_URL: inject('temporalUiUrl'),
      ...(python ? { CAPSTAN_PYTHON: python } : {}),
      ...o.env,
    },
    dataDir,
  );
  const logger = o.logger ?? silentLogger;
  const rt = await createRuntime(config, logger, { stages });
  const taskQueues = config.taskQueues;

  const t = config.telemetry;
  // As worker.ts: metrics and the ops listener (on the address given; 127.0.0.1:0 for any port) when CAPSTAN_OPS_LISTEN is set.
  const workerTelemetry = t.opsListen
    ? createWorkerTelemetry({ roles: ['workflows', 'cpu', 'gpu'], ...(o.sdkMetrics ? { sdk: o.sdkMetrics } : {}), logger })
    : undefined;
  const workerOps = t.opsListen
    ? await startOpsServer({
        listen: t.opsListen,
        ...(t.metricsToken ? { metricsToken: t.metricsToken } : {}),
        ...(workerTelemetry ? { metrics: workerTelemetry.render } : {}),
        logger,
      })
    : undefined;
  const nativeConnection = await NativeConnection.connect({ address });
  let workers: Worker[] = [];
  let running: Promise<unknown>[] = [];
  const startWorkers = async () => {
    workers = await createWorkers({
      connection: nativeConnection,
      namespace,
      taskQueues,
      roles: ['workflows', 'cpu', 'gpu'],
      activities: {
        stages,
        artifacts: rt.artifacts,
        services: rt.services,
        logger: silentLogger,
        heartbeatEveryMs: 500,
        meter: rt.meter,
        cache: rt.cache,
        records: rt.records,
        tokens: rt.tokens,
      },
      shutdownGraceTime: '2s',
      slotLeaseMs: config.slotLeaseMs,
      slotRevokeAfterMs: config.slotRevokeAfterMs,
      slotRecordsDir: path.join(dataDir, 'workers'),
      ...(workerTelemetry ? { metrics: workerTelemetry.metrics } : {}),
    });
    // runWorkers: a stopped worker's slot reports are withdrawn before it resolves (as in worker.ts).
    running = [runWorkers(workers)];
  };
  const stopWorkers = async () => {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(running);
  };
  await startWorkers();

  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace, ...clientTracing() });
  const adminToken = (await rt.tokens.create({ name: 'test-admin', role: 'admin' })).token;
  const app = createApiApp(rt, {
    client,
    namespace,
    modelRefreshMs: 500,
    ...(config.temporalUiUrl ? { temporalUiUrl: config.temporalUiUrl } : {}),
    // Scrape-time reads cached for 1 s (5 s in production), so a test's scrapes see changes soon.
    ...(t.metrics ? { metrics: { cacheMs: 1000 } } : {}),
    ...(config.telemetry.traceUiUrl ? { traceUiUrl: config.telemetry.traceUiUrl } : {}),
  });
  const api = app.api;
  const ops = { ...(t.metricsToken ? { metricsToken: t.metricsToken } : {}), ...(app.metrics ? { metrics: app.metrics } : {}) };
  const server: Server = createServer(createNodeHandler(api, { maxBodyBytes: config.api.maxBodyBytes, logger, ops }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  return {
    client,
    connection,
    api,
    engine: app.engine,
    url,
    runtime: rt,
    stages,
    artifacts: rt.artifacts,
    db: rt.db,
    dataDir,
    taskQueues,
    get workers() {
      return workers;
    },
    adminToken,
    async token(role, name = `test-${role}`) {
      return (await rt.tokens.create({ name, role })).token;
    },
    async gql(query, variables, token = adminToken) {
      const res = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
    stopWorkers,
    startWorkers,
    ...(workerTelemetry ? { workerTelemetry } : {}),
    ...(workerOps ? { workerOps } : {}),
    ...(app.metrics ? { apiMetrics: app.metrics } : {}),
    async close() {
      server.close();
      await workerOps?.close();
      await stopWorkers();
      await app.close();
      await connection.close();
      await nativeConnection.close();
      await rt.close();
    },
  };
}

/**
 * A run's life through a stack's GraphQL, asking for `fields` of each run: `start` a spec (its
 * errors fail the test), `read` a run, and wait `until` it passes a check (a run that closed
 * otherwise ends the wait with its last event).
 */
export function runsVia(stack: () => TestStack, fields: string, o: { startFields?: string; pollMs?: number; timeoutMs?: number } = {}) {
  const start = async (spec: unknown): Promise<string> => {
    const r = await stack().gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { ${o.startFields ?? 'id'} } }`, { s: spec });
    if (r.errors) throw new Error(`startPipeline refused the spec: ${JSON.stringify(r.errors)}`);
    return r.data.startPipeline.id as string;
  };
  const read = async (id: string) => (await stack().gql(`query($id: ID!) { run(id: $id) { ${fields} } }`, { id })).data.run;
  const until = (id: string, ok: (run: any) => boolean, what: string, ms = o.timeoutMs ?? 120_000) =>
    waitFor(
      async () => {
        const run = await read(id);
        if (['FAILED', 'CANCELLED', 'TERMINATED'].includes(run.status) && !ok(run))
          throw new Error(`run ${id} is ${run.status}: ${JSON.stringify(run.events.at(-1))}`);
        return ok(run) ? run : undefined;
      },
      what,
      ms,
      o.pollMs ?? 500,
    );
  return { start, read, until };
}

/** Polls until fn returns a truthy value (bounded), returning it. */
export async function waitFor<T>(fn: () => Promise<T | undefined | false | null>, what: string, timeoutMs = 120_000, everyMs = 250): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/**
 * Waits until Temporal's visibility store (what workflow.count and workflow.list read: eventually
 * consistent) has caught up with every workflow started before the call — instead of sleeping "long
 * enough". It starts a marker workflow now, waits until visibility lists it, and terminates it.
 * Visibility records the starts of a history shard in the order they happened (the dev server has
 * one shard), so once the marker is listed, so is any workflow whose start returned before the
 * call. The marker runs on a task queue of its own that no worker polls (it never runs) and has no
 * Capstan search attributes, so no count of runs, of a pipeline or of a stack's queue includes it.
 */
export async function visibilityCaughtUp(client: Client, timeoutMs = 30_000): Promise<void> {
  const workflowId = `visibility-marker/${randomBytes(6).toString('hex')}`;
  const marker = await client.workflow.start('capstanVisibilityMarker', { taskQueue: 'capstan-visibility-marker', workflowId, args: [] });
  try {
    await waitFor(
      async () => (await client.workflow.count(`WorkflowId = '${workflowId}'`)).count === 1,
      'visibility to list the marker workflow',
      timeoutMs,
      50,
    );
  } finally {
    await marker.terminate('visibility marker: done').catch(() => undefined);
  }
}
