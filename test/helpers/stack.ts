import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { inject } from 'vitest';
import { createApi, type Api } from '../../api/app.js';
import type { ApiModule } from '../../api/module.js';
import type { StageCache, StageMeter } from '../../activities/index.js';
import { ArtifactStore } from '../../lib/artifacts.js';
import { openDb } from '../../lib/db/open.js';
import type { Db } from '../../lib/db/types.js';
import { silentLogger } from '../../lib/logger.js';
import { createWorkers } from '../../lib/workers.js';
import { createDbStageCache, migrateOps } from '../../lib/ops-store.js';
import { migrate } from '../../lib/db/migrate.js';
import { createLedgerService, ledgerMigrations, loadPriceSheet } from '../../ledger/index.js';
import { apiModules } from '../../api/modules/index.js';
import type { StagePlugin } from '../../plugins/contract.js';
import { StageRegistry } from '../../plugins/registry.js';
import type { StageServices } from '../../plugins/services.js';

export interface TestStack {
  client: Client;
  connection: Connection;
  api: Api;
  /** Base URL of the API served over real HTTP. */
  url: string;
  registry: StageRegistry;
  artifacts: ArtifactStore;
  db: Db;
  dataDir: string;
  taskQueues: { workflows: string; cpu: string; gpu: string };
  workers: Worker[];
  /** GraphQL over HTTP; throws when the response has errors unless allowErrors. */
  gql<T = any>(query: string, variables?: Record<string, unknown>): Promise<{ data: T; errors?: { message: string; extensions?: any }[] }>;
  /** Stops the workers (e.g. to simulate a lost worker) — the stack stays up otherwise. */
  stopWorkers(): Promise<void>;
  startWorkers(): Promise<void>;
  close(): Promise<void>;
}

export interface TestStackOptions {
  plugins: StagePlugin<any>[];
  services?: (ctx: { db: Db; artifacts: ArtifactStore }) => Promise<StageServices> | StageServices;
  meter?: (db: Db) => StageMeter;
  cache?: (db: Db) => StageCache;
  modules?: ApiModule[];
}

/** A real stack for one test file: its own task queues on the shared dev server, workers, and the API over HTTP. */
let runtimeInstalled = false;

export async function startTestStack(o: TestStackOptions): Promise<TestStack> {
  if (!runtimeInstalled) {
    // Keep the SDK's per-worker INFO lines out of test output.
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    runtimeInstalled = true;
  }
  const address = inject('temporalAddress');
  const namespace = inject('temporalNamespace');
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-test-'));
  const artifacts = new ArtifactStore(path.join(dataDir, 'artifacts'));
  const db = await openDb({ sqlitePath: path.join(dataDir, 'capstan.db') });
  const registry = new StageRegistry();
  for (const p of o.plugins) registry.register(p);
  registry.freeze();
  const q = `t-${randomBytes(4).toString('hex')}`;
  const taskQueues = { workflows: q, cpu: `${q}-cpu`, gpu: `${q}-gpu` };
  const services: StageServices = {};
  await migrate(db, ledgerMigrations);
  const ledger = createLedgerService(db, { priceSheet: await loadPriceSheet(path.resolve(import.meta.dirname, '../../config/price-sheet.json')) });
  const meter = o.meter ? o.meter(db) : ledger;
  Object.assign(services, { db, ledger }, o.services ? await o.services({ db, artifacts }) : {});
  await migrateOps(db);
  const cache = o.cache ? o.cache(db) : createDbStageCache(db);

  const nativeConnection = await NativeConnection.connect({ address });
  let workers: Worker[] = [];
  let running: Promise<unknown>[] = [];
  const startWorkers = async () => {
    workers = await createWorkers({
      connection: nativeConnection,
      namespace,
      taskQueues,
      roles: ['workflows', 'cpu', 'gpu'],
      activities: { registry, artifacts, services, logger: silentLogger, heartbeatEveryMs: 500, ...(meter ? { meter } : {}), cache },
      shutdownGraceTime: '2s',
    });
    running = workers.map((w) => w.run());
  };
  const stopWorkers = async () => {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(running);
  };
  await startWorkers();

  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace });
  const api = await createApi(
    { temporal: client, namespace, taskQueue: taskQueues.workflows, registry, artifacts, db, logger: silentLogger, services: { taskQueues, ...services } },
    o.modules ?? apiModules({ db, modelRefreshMs: 500 }),
  );
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? new Uint8Array(Buffer.concat(chunks)) : undefined;
    const r = await api.fetch(
      new Request(`http://127.0.0.1${req.url}`, { method: req.method ?? 'GET', headers: req.headers as Record<string, string>, ...(body ? { body } : {}) }),
    );
    res.writeHead(r.status, Object.fromEntries(r.headers.entries()));
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  return {
    client,
    connection,
    api,
    url,
    registry,
    artifacts,
    db,
    dataDir,
    taskQueues,
    get workers() {
      return workers;
    },
    async gql(query, variables) {
      const res = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
    stopWorkers,
    startWorkers,
    async close() {
      server.close();
      await stopWorkers();
      await api.close();
      await connection.close();
      await nativeConnection.close();
      await db.close();
    },
  };
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
