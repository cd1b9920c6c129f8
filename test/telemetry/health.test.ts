import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createNodeHandler } from '../../api/http.js';
import { apiHealth, temporalCheck, workerHealth, type ProcessHealth } from '../../app/health.js';
import { freePort, startDevServer, type DevServer } from '../../dev/dev-server.js';
import { openPostgres } from '../../lib/db/postgres.js';
import type { Db } from '../../lib/db/types.js';
import { silentLogger } from '../../lib/logger.js';
import { cachedCheck, eventLoopCheck, healthReport, type HealthProviders } from '../../lib/telemetry/health.js';
import { startOpsServer, type OpsServer } from '../../lib/telemetry/ops-server.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const root = path.resolve(import.meta.dirname, '../..');

interface Answer {
  status: number;
  body: { status: string; checks: Record<string, { ok: boolean; detail?: string }> };
}

async function probe(url: string): Promise<Answer> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

/** A GET with a Host header of our choosing (fetch does not let one set it): what a kubelet probing by IP sends. */
function getWithHost(url: string, host: string, method = 'GET'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.once('error', reject);
    req.end();
  });
}

/** Serves the API (the stack's) over HTTP with these health providers, as api/server.ts does. */
async function serveApi(stack: TestStack, health: HealthProviders): Promise<{ url: string; server: Server }> {
  const server = createServer(createNodeHandler(stack.api, { maxBodyBytes: 1 << 20, logger: silentLogger, health }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server };
}

let temporal: DevServer | undefined;
let stack: TestStack | undefined;
let native: NativeConnection | undefined;
let api: { url: string; server: Server } | undefined;
let ops: OpsServer | undefined;
let aHealth: ProcessHealth | undefined;
let wHealth: ReturnType<typeof workerHealth> | undefined;
let startTemporal: () => Promise<DevServer>;

beforeAll(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-health-'));
  const port = await freePort();
  startTemporal = () => startDevServer({ cliPath: inject('temporalCliPath'), dbFile: path.join(dir, 'temporal.db'), port, logger: silentLogger });
  temporal = await startTemporal();
  stack = await startTestStack({ plugins, temporalAddress: temporal.address });
  native = await NativeConnection.connect({ address: temporal.address });
  aHealth = apiHealth({ temporal: stack.connection, db: stack.db, logger: silentLogger });
  api = await serveApi(stack, aHealth);
  // The worker's side: its NativeConnection, its Temporal workers, on an ops listener (CAPSTAN_OPS_LISTEN) as worker.ts wires it.
  wHealth = workerHealth({ temporal: native, db: stack.db, workers: () => stack!.workers, logger: silentLogger });
  ops = await startOpsServer({ listen: { host: '127.0.0.1', port: 0 }, live: wHealth.live, ready: wHealth.ready, logger: silentLogger });
}, 180_000);

afterAll(async () => {
  api?.server.close();
  await ops?.close();
  aHealth?.stop();
  wHealth?.stop();
  await stack?.close();
  await native?.close();
  await temporal?.stop();
});

describe('readiness and liveness tell the truth', () => {
  it('all is well: the API and the worker are ready and live, the API answers without a token and whatever the Host', async () => {
    const r = await probe(`${api!.url}/readyz`);
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('ok');
    expect(Object.keys(r.body.checks).sort()).toEqual(['db', 'draining', 'temporal']);
    expect(Object.values(r.body.checks).every((c) => c.ok)).toBe(true);
    const w = await probe(`${ops!.url}/readyz`);
    expect(w.status).toBe(200);
    expect(Object.keys(w.body.checks).sort()).toEqual(['db', 'temporal', 'workers']);
    expect(w.body.checks.workers).toEqual({ ok: true, detail: `${stack!.workers.length} running` });
    expect((await probe(`${api!.url}/livez`)).status).toBe(200);
    expect((await probe(`${ops!.url}/livez`)).status).toBe(200);
    // A kubelet probes with the pod's IP as Host: the probes answer; the rest of the API still refuses that Host.
    expect(await getWithHost(`${api!.url}/readyz`, '10.1.2.3:8080')).toBe(200);
    expect(await getWithHost(`${api!.url}/livez`, '10.1.2.3:8080')).toBe(200);
    expect(await getWithHost(`${api!.url}/graphql`, '10.1.2.3:8080', 'POST')).toBe(421);
    expect(await getWithHost(`${api!.url}/healthz`, '10.1.2.3:8080')).toBe(421);
    // Only GET/HEAD; nothing but the checks.
    expect((await fetch(`${api!.url}/readyz`, { method: 'POST' })).status).toBe(405);
  });

  it('readiness is false while the Temporal server is stopped (liveness stays true), and true again once it is back', { timeout: 180_000 }, async () => {
    await temporal!.stop();
    const down = await waitFor(
      async () => {
        const r = await probe(`${api!.url}/readyz`);
        return r.status === 503 && r.body.checks.temporal?.ok === false ? r : undefined;
      },
      'the API to report Temporal unreachable',
      30_000,
    );
    expect(down.body.status).toBe('unavailable');
    expect(down.body.checks.db!.ok).toBe(true);
    // A short reason, no address.
    expect(down.body.checks.temporal!.detail).toMatch(/^(unreachable|no answer|failed)/);
    expect(JSON.stringify(down.body)).not.toContain('127.0.0.1');
    const wDown = await waitFor(
      async () => {
        const r = await probe(`${ops!.url}/readyz`);
        return r.status === 503 && r.body.checks.temporal?.ok === false ? r : undefined;
      },
      'the worker to report Temporal unreachable',
      30_000,
    );
    expect(JSON.stringify(wDown.body)).not.toContain('127.0.0.1');
    // Liveness never depends on Temporal.
    expect((await probe(`${api!.url}/livez`)).status).toBe(200);
    expect((await probe(`${ops!.url}/livez`)).status).toBe(200);

    temporal = await startTemporal();
    await waitFor(async () => (await probe(`${api!.url}/readyz`)).status === 200, 'the API to be ready again', 60_000);
    await waitFor(async () => (await probe(`${ops!.url}/readyz`)).status === 200, 'the worker to be ready again', 60_000);
    expect((await probe(`${api!.url}/livez`)).status).toBe(200);
  });

  it('a Temporal server without gRPC health service is asked GetSystemInfo instead', async () => {
    const c = stack!.connection;
    let healthCalls = 0;
    const check = temporalCheck(
      {
        healthService: {
          check: async () => {
            healthCalls++;
            return Promise.reject(Object.assign(new Error('unknown service grpc.health.v1.Health'), { code: 12 }));
          },
        } as never,
        workflowService: c.workflowService,
        withDeadline: (d, fn) => c.withDeadline(d, fn),
      },
      { cacheMs: 0 },
    );
    expect(await check.get()).toEqual({ ok: true });
    expect(await check.get()).toEqual({ ok: true });
    expect(healthCalls).toBe(1);
  });

  it('readiness is false while draining: the API after drain(), the worker while its Temporal workers stop', async () => {
    await stack!.stopWorkers();
    const w = await probe(`${ops!.url}/readyz`);
    expect(w.status).toBe(503);
    expect(w.body.checks.workers!.ok).toBe(false);
    expect(w.body.checks.workers!.detail).toMatch(/not running \(stopped\)/);
    expect((await probe(`${ops!.url}/livez`)).status).toBe(200);
    await stack!.startWorkers();
    await waitFor(async () => (await probe(`${ops!.url}/readyz`)).status === 200, 'the worker to be ready with new workers', 30_000);

    // The API's own: drained on SIGTERM/SIGINT (api/server.ts), on a second listener so the shared one stays ready.
    const h = apiHealth({ temporal: stack!.connection, db: stack!.db });
    const second = await serveApi(stack!, h);
    try {
      expect((await probe(`${second.url}/readyz`)).status).toBe(200);
      h.drain();
      const r = await probe(`${second.url}/readyz`);
      expect(r.status).toBe(503);
      expect(r.body.checks.draining).toEqual({ ok: false, detail: 'shutting down' });
      expect(r.body.checks.temporal!.ok).toBe(true);
      expect((await probe(`${second.url}/livez`)).status).toBe(200);
    } finally {
      second.server.close();
      h.stop();
    }
  });
});

describe('the database check', () => {
  let pgDir: string | undefined;
  let db: Db | undefined;
  afterAll(async () => {
    await db?.close().catch(() => undefined);
    if (pgDir) {
      execFileSync('bash', [path.join(root, 'scripts', 'postgres-stop.sh'), pgDir], { stdio: 'ignore', timeout: 60_000 });
      rmSync(pgDir, { recursive: true, force: true });
    }
  });

  it('readiness is false naming the db check while PostgreSQL is stopped, and true again once it is back', { timeout: 240_000 }, async () => {
    // A cluster of this test's own: stopping the shared test cluster would fail other tests.
    pgDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-health-pg-'));
    const port = String(await freePort());
    const startPg = () =>
      execFileSync('bash', [path.join(root, 'scripts', 'postgres.sh'), pgDir!, port, 'capstan_health'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 300_000,
      })
        .trim()
        .split('\n')
        .pop()!;
    const url = startPg();
    db = openPostgres({ url, max: 2 });
    const h = apiHealth({ temporal: stack!.connection, db });
    const served = await serveApi(stack!, h);
    try {
      const up = await probe(`${served.url}/readyz`);
      expect(up.status).toBe(200);
      expect(up.body.checks.db).toEqual({ ok: true, detail: 'postgres' });

      execFileSync('bash', [path.join(root, 'scripts', 'postgres-stop.sh'), pgDir], { stdio: 'ignore', timeout: 60_000 });
      const down = await waitFor(
        async () => {
          const r = await probe(`${served.url}/readyz`);
          return r.status === 503 && r.body.checks.db?.ok === false ? r : undefined;
        },
        'readiness to report the database unreachable',
        30_000,
      );
      expect(down.body.checks.temporal!.ok).toBe(true);
      expect(down.body.checks.db!.detail).toMatch(/^(unreachable|no answer|failed)/);
      expect(JSON.stringify(down.body)).not.toContain(port);
      expect((await probe(`${served.url}/livez`)).status).toBe(200);

      startPg();
      await waitFor(async () => (await probe(`${served.url}/readyz`)).status === 200, 'readiness once PostgreSQL is back', 60_000);
    } finally {
      served.server.close();
      h.stop();
    }
  });
});

describe('the entry points', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  /** An entry point as a process of its own (as `npm start` runs it), its output kept for failure messages. */
  const start = (entry: string, env: Record<string, string>) => {
    let out = '';
    const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    children.push(child);
    return { child, output: () => out.slice(-4000) };
  };
  const ready = async (url: string) => (await probe(url).catch(() => undefined))?.status === 200;

  it('api/server.ts answers /livez and /readyz on its port and its ops listener; worker.ts on its ops listener, ready with its workers running', {
    timeout: 240_000,
  }, async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-health-entry-'));
    const [apiPort, apiOps, workerOps] = [await freePort(), await freePort(), await freePort()];
    const env = {
      CAPSTAN_DATA_DIR: dataDir,
      CAPSTAN_LOG_LEVEL: 'warn',
      CAPSTAN_TASK_QUEUE: `health-${randomBytes(4).toString('hex')}`,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    };
    const apiProc = start('api/server.ts', { ...env, CAPSTAN_API_PORT: String(apiPort), CAPSTAN_OPS_LISTEN: `127.0.0.1:${apiOps}` });
    const workerProc = start('worker.ts', { ...env, CAPSTAN_OPS_LISTEN: `127.0.0.1:${workerOps}` });
    await waitFor(
      async () => (await ready(`http://127.0.0.1:${apiPort}/readyz`)) || (apiProc.child.exitCode !== null && 'exited'),
      'the API to be ready',
      120_000,
      300,
    ).then((r) => {
      if (r === 'exited') throw new Error(`the API exited: ${apiProc.output()}`);
    });
    expect(await ready(`http://127.0.0.1:${apiOps}/readyz`)).toBe(true);
    expect((await probe(`http://127.0.0.1:${apiOps}/livez`)).status).toBe(200);
    const w = await waitFor(
      async () => {
        if (workerProc.child.exitCode !== null) throw new Error(`the worker exited: ${workerProc.output()}`);
        const r = await probe(`http://127.0.0.1:${workerOps}/readyz`).catch(() => undefined);
        return r?.status === 200 ? r : undefined;
      },
      'the worker to be ready',
      150_000,
      300,
    );
    expect(Object.keys(w.body.checks).sort()).toEqual(['db', 'temporal', 'workers']);
    expect(w.body.checks.workers!.detail).toMatch(/^\d+ running$/);

    // SIGTERM: both stop cleanly and their listeners close.
    const exited = (c: ChildProcess) => new Promise<number | null>((r) => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));
    workerProc.child.kill('SIGTERM');
    apiProc.child.kill('SIGTERM');
    expect(await exited(workerProc.child)).toBe(0);
    expect(await exited(apiProc.child)).toBe(0);
    await expect(fetch(`http://127.0.0.1:${workerOps}/livez`)).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${apiOps}/livez`)).rejects.toThrow();
    rmSync(dataDir, { recursive: true, force: true });
  });
});

describe('checks cannot be hammered and always answer', () => {
  it('probes share one call per cache period, and a hung dependency answers "no answer" within its timeout', async () => {
    let calls = 0;
    const never = new Promise<undefined>(() => undefined);
    const hung = cachedCheck({
      name: 'hung',
      timeoutMs: 300,
      cacheMs: 60_000,
      probe: () => {
        calls++;
        return never;
      },
    });
    const report = healthReport([hung]);
    const reports = await Promise.all(Array.from({ length: 50 }, () => report()));
    expect(calls).toBe(1);
    for (const r of reports) expect(r).toEqual({ ok: false, checks: { hung: { ok: false, detail: 'no answer within 300ms' } } });

    let n = 0;
    const counted = cachedCheck({ name: 'counted', cacheMs: 60_000, probe: async () => void n++ });
    for (let i = 0; i < 20; i++) await counted.get();
    expect(n).toBe(1);
  });

  it('liveness is false while the event loop is starved', async () => {
    const loop = eventLoopCheck({ maxDelayMs: 50, windowMs: 60_000 });
    try {
      expect((await loop.get()).ok).toBe(true);
      // Blocks the loop in 200 ms slices, letting it turn in between (so the monitor takes its samples).
      for (let i = 0; i < 5; i++) {
        const end = Date.now() + 200;
        while (Date.now() < end) {
          /* busy */
        }
        await new Promise((r) => setTimeout(r, 0));
      }
      const r = await loop.get();
      expect(r.ok).toBe(false);
      expect(r.detail).toMatch(/^event loop delayed \d+ ms on average \(bound 50 ms\)$/);
    } finally {
      loop.stop();
    }
  });
});
