// Fault tests over real processes: a PostgreSQL outage during stages, and a SIGKILLed API while
// predictions are served. Each asserts that no money line is lost and none is booked twice, and
// prints the figures (runs started / completed / lost; ledger lines expected vs found).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { allMigrations } from '../../app/runtime.js';
import { Engine } from '../../engine/index.js';
import { ArtifactStore } from '../../lib/artifacts.js';
import { freePort } from '../../dev/dev-server.js';
import { migrate } from '../../lib/db/migrate.js';
import { openDb } from '../../lib/db/open.js';
import { openSqlite } from '../../lib/db/sqlite.js';
import type { Db } from '../../lib/db/types.js';
import { silentLogger } from '../../lib/logger.js';
import { createLedgerService } from '../../ledger/meter.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { listEntries, usageCount } from '../../ledger/repository.js';
import { loadTf } from '../../ml/backend.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { StageRegistry } from '../../plugins/registry.js';
import { ModelRegistry, PRODUCTION_ALIAS } from '../../serving/registry.js';
import { shoutStage, writeNoteStage } from '../fixtures/plugins/test-stages.js';
import { waitFor } from '../helpers/stack.js';
import { makeDatasetArtifact, makeModelArtifact } from '../models/fixtures.js';

const root = path.resolve(import.meta.dirname, '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A Capstan entry point as a real child process; its output is kept for failure messages. */
function startProcess(entry: string, env: Record<string, string>): { child: ChildProcess; output: () => string } {
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out.slice(-4000) };
}

async function stopProcess(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await Promise.race([exited, sleep(15_000).then(() => child.kill('SIGKILL'))]);
}

function figures(title: string, rows: [string, number | string][]): void {
  const w = Math.max(...rows.map(([k]) => k.length));
  process.stdout.write(`\n${title}\n${rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n')}\n`);
}

/** A private PostgreSQL cluster (its own folder and port), so stopping it disturbs no other test. */
class PrivateCluster {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'capstan-pg-fault-'));
  url = '';
  constructor(readonly port: number) {
    chmodSync(this.dir, 0o755); // as root, the cluster belongs to the postgres user, which must reach it
  }
  start(): string {
    const out = execFileSync('bash', [path.join(root, 'scripts/postgres.sh'), this.dir, String(this.port), 'capstan_fault'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 300_000,
    });
    this.url = out.trim().split('\n').pop()!;
    return this.url;
  }
  stop(mode: 'fast' | 'immediate' = 'fast'): void {
    const bin = execFileSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1'], { encoding: 'utf8' }).trim();
    const cmd = [`${bin}/pg_ctl`, '-D', path.join(this.dir, 'cluster'), 'stop', '-m', mode, '-w'];
    const asOwner = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...cmd] : cmd;
    try {
      execFileSync(asOwner[0]!, asOwner.slice(1), { stdio: 'ignore', timeout: 60_000 });
    } catch {
      // already stopped
    }
  }
  remove(): void {
    this.stop('immediate');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('ledger under faults', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch {
        // keep cleaning
      }
    }
  });

  it('a PostgreSQL outage during stages: runs complete and every usage line is booked exactly once', async () => {
    const cluster = new PrivateCluster(await freePort());
    cleanups.push(() => cluster.remove());
    const url = cluster.start();
    const dataDir = mkdtempSync(path.join(tmpdir(), 'capstan-fault-worker-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // A CPU-second costs 1.00, so every stage's CPU line is visible in the ledger.
    const sheetPath = path.join(dataDir, 'price-sheet.json');
    writeFileSync(sheetPath, JSON.stringify({ currency: 'USD', compute: { cpuHour: '3600', gpuHour: '7200' }, storage: { gbMonth: '1', retentionMonths: 1 } }));
    const queue = `fault-${randomBytes(4).toString('hex')}`;
    const env = {
      CAPSTAN_DATA_DIR: dataDir,
      DATABASE_URL: url,
      CAPSTAN_TASK_QUEUE: queue,
      CAPSTAN_PLUGINS: path.join(root, 'test/fixtures/plugins/test-stages.ts'),
      CAPSTAN_PRICE_SHEET: sheetPath,
      CAPSTAN_LOG_LEVEL: 'info',
      CAPSTAN_SHUTDOWN_GRACE: '2s',
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    };
    const worker = startProcess('worker.ts', env);
    cleanups.push(() => stopProcess(worker.child));
    await waitFor(async () => worker.output().includes('worker up'), `the worker to start: ${worker.output()}`, 150_000, 200);

    const connection = await Connection.connect({ address: inject('temporalAddress') });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: inject('temporalNamespace') });
    const stages = new StageRegistry();
    for (const p of [writeNoteStage, shoutStage, roiLedgerStage()]) stages.register(p as never);
    stages.freeze();
    const engineDb = await openDb({ sqlitePath: path.join(dataDir, 'engine.db') });
    cleanups.push(() => engineDb.close());
    await migrate(engineDb, allMigrations);
    const engine = new Engine({
      client,
      namespace: inject('temporalNamespace'),
      taskQueues: { workflows: queue, cpu: `${queue}-cpu`, gpu: `${queue}-gpu` },
      stages,
      artifacts: new ArtifactStore(path.join(dataDir, 'artifacts')),
      db: engineDb,
      logger: silentLogger,
    });
    // Each run's first stage is held until the test creates a file (test:write-note holdUntil), so
    // the outage falls where it must however fast the machine is: run 0's stage runs through the
    // whole outage (released once PostgreSQL is back); run 1's is released during the outage, so
    // its end, its retried stage and its ledger stage fall in it.
    const hold = (i: number) => path.join(dataDir, `hold-${i}`);
    const release = (i: number) => writeFileSync(hold(i), '');
    const spec = (i: number) => ({
      name: `pg-outage-${i}`,
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: `run ${i}`, holdUntil: hold(i) } },
        { id: 'shout', plugin: 'test:shout', params: { failUntilAttempt: 1 } },
        {
          id: 'roi',
          plugin: 'core:roi-ledger',
          params: { costs: [{ category: 'other', description: 'fault test', amount: '1' }], revenue: { kind: 'contract', value: '10' } },
        },
      ],
    });
    const runs = await Promise.all([0, 1].map((i) => engine.start(spec(i))));

    // Stop PostgreSQL while the first stages run.
    await waitFor(async () => [0, 1].every((i) => existsSync(`${hold(i)}.running`)), `the first stages to run: ${worker.output()}`, 120_000, 100);
    cluster.stop('fast');
    const outageStarted = Date.now();
    // Run 1's first stage ends in the outage, its second is retried, and its ledger stage, which
    // books in PostgreSQL, fails: PostgreSQL comes back once an attempt of the ledger stage has failed.
    release(1);
    const roiFailure = await waitFor(
      async () => (await engine.read(runs[1]!.id))?.stages.find((s) => s.id === 'roi')?.error ?? undefined,
      `run 1's ledger stage to fail in the outage: ${worker.output()}`,
      120_000,
      100,
    );
    const outbox = openSqlite({ path: path.join(dataDir, 'ledger-outbox.db') });
    cleanups.push(() => outbox.close());
    const outboxRows = async () => Number((await outbox.query<{ n: number }>('SELECT COUNT(*) AS n FROM ledger_outbox'))[0]?.n ?? 0);
    const queued = await outboxRows();
    cluster.start();
    const outageSeconds = (Date.now() - outageStarted) / 1000;
    // Run 0's first stage ran through the whole outage; it ends now that PostgreSQL is back.
    expect((await engine.read(runs[0]!.id))?.stages.find((s) => s.id === 'write')?.status).toBe('RUNNING');
    release(0);

    const outcomes = await Promise.all(
      runs.map((r) =>
        client.workflow
          .getHandle(r.id)
          .result()
          .then(
            () => 'completed',
            (e: Error) => `failed: ${e.message}`,
          ),
      ),
    );
    const db: Db = await openDb({ url, sqlitePath: '/nonexistent' });
    cleanups.push(() => db.close());

    let expected = 0;
    let found = 0;
    let entries = 0;
    let duplicates = 0;
    let reversals = 0;
    let ownReversals = 0;
    for (const r of runs) {
      // Usage lines expected: one per attempt Temporal ran (its history has each activity's last attempt number).
      const history = await client.workflow.getHandle(r.id).fetchHistory();
      const attempts = (history.events ?? [])
        .filter((e) => e.activityTaskStartedEventAttributes)
        .map((e) => e.activityTaskStartedEventAttributes!.attempt ?? 1);
      const want = attempts.reduce((a, b) => a + b, 0);
      expected += want;
      // The ledger stage's last attempt is recorded after it booked: wait for the outbox to drain.
      const n = await waitFor(async () => ((await usageCount(db, r.id)) >= want ? usageCount(db, r.id) : undefined), `usage of ${r.id}`, 60_000, 250).catch(
        () => usageCount(db, r.id),
      );
      found += n;
      const e = await listEntries(db, r.id);
      entries += e.length;
      // The ledger stage's own last attempt is recorded after it booked and re-books the run: when
      // an earlier attempt of it was already priced, its line is corrected (a reversal and a new version).
      reversals += e.filter((x) => x.reverses !== null && x.stageId !== 'roi').length;
      ownReversals += e.filter((x) => x.reverses !== null && x.stageId === 'roi').length;
      // Live entries: not reversals, and not reversed by one.
      const reversed = new Set(e.map((x) => x.reverses).filter((x) => x !== null));
      const keys = e.filter((x) => x.reverses === null && !reversed.has(x.id)).map((x) => x.entryKey);
      duplicates += keys.length - new Set(keys).size;
    }
    // Nothing more can be booked once the worker's outbox is empty (it is asserted below).
    await waitFor(async () => (await outboxRows()) === 0, 'the outbox to drain', 60_000, 100).catch(() => undefined);
    const after = (await Promise.all(runs.map((r) => usageCount(db, r.id)))).reduce((a, b) => a + b, 0);
    const pending = await outboxRows();
    const completed = outcomes.filter((o) => o === 'completed').length;
    figures('PostgreSQL outage during stages (pg_ctl stop -m fast, start again)', [
      ['outage (s): from the stop until PostgreSQL was started again', outageSeconds.toFixed(1)],
      ["run 1's ledger stage in the outage", roiFailure.slice(0, 120)],
      ['runs started', runs.length],
      ['runs completed', completed],
      ['runs lost', runs.length - completed],
      ['usage records queued in the outbox during the outage', queued],
      ['usage lines expected (attempts in Temporal history)', expected],
      ['usage lines found in the ledger', after],
      ['ledger entries booked', entries],
      ['entries booked twice (same key live twice)', duplicates],
      ["reversals (other than the ledger stage's own line)", reversals],
      ["reversals of the ledger stage's own line", ownReversals],
      ['outbox records left', pending],
    ]);
    expect(outcomes, worker.output()).toEqual(['completed', 'completed']);
    expect(queued).toBeGreaterThan(0); // the outage really held usage back
    expect(found).toBe(expected);
    expect(after).toBe(expected);
    expect(duplicates).toBe(0);
    expect(reversals).toBe(0);
    expect(pending).toBe(0);
  });

  it('SIGKILL of the API while predictions are served: every acknowledged prediction is booked once after restart', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'capstan-fault-api-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const db = await openDb({ sqlitePath: path.join(dataDir, 'capstan.db') });
    cleanups.push(() => db.close());
    await migrate(db, allMigrations);
    // A deployed model and the run that produced it, with a per-prediction revenue model.
    const store = new ArtifactStore(path.join(dataDir, 'artifacts'));
    const runId = 'pipeline/kill-api/1';
    const { tf } = await loadTf();
    const dataset = await makeDatasetArtifact(store, { runId, train: 300, test: 50 });
    const model = await makeModelArtifact(tf, store, dataset, { runId, stageId: 'fit', epochs: 1, hidden: [16] });
    const registry = new ModelRegistry(db);
    const { version } = await registry.register({
      model: 'digits',
      runId,
      stageId: 'deploy',
      artifactUri: model.uri,
      sha256: model.sha256,
      bytes: model.bytes,
      metrics: {},
    });
    await registry.setAlias('digits', PRODUCTION_ALIAS, version.version);
    const ledger = createLedgerService(db, {
      priceSheet: parsePriceSheet({ currency: 'USD', compute: { cpuHour: '1', gpuHour: '1' }, storage: { gbMonth: '0', retentionMonths: 0 } }),
    });
    await ledger.recordUsage({
      runId,
      pipeline: 'kill-api',
      stageId: 'fit',
      plugin: 'x',
      attempt: 1,
      resource: 'cpu',
      wallSeconds: 60,
      cpuSeconds: 3600,
      deviceSeconds: 60,
      bytesWritten: 0,
      succeeded: true,
    });
    await ledger.bookRun({
      runId,
      pipeline: 'kill-api',
      stageId: 'roi',
      revenue: { kind: 'per-prediction', pricePer1000: '1.00', expectedPredictions: 1000, horizonDays: 1 },
    });

    const port = await freePort();
    const env = {
      CAPSTAN_DATA_DIR: dataDir,
      CAPSTAN_API_PORT: String(port),
      CAPSTAN_AUTH: 'off',
      CAPSTAN_LOG_LEVEL: 'warn',
      CAPSTAN_TASK_QUEUE: `fault-api-${randomBytes(4).toString('hex')}`,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    };
    const base = `http://127.0.0.1:${port}`;
    const up = async (p: { output: () => string }) =>
      waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok, `the API to start: ${p.output()}`, 120_000, 200);
    let api = startProcess('api/server.ts', env);
    cleanups.push(() => stopProcess(api.child, 'SIGKILL'));
    await up(api);

    const sample = Array.from({ length: 64 }, (_, i) => ((i * 7) % 13) / 13);
    let acknowledged = 0;
    let answered = 0;
    let sent = 0;
    let unanswered = 0;
    let killed = false;
    const client = async (seed: number) => {
      for (let i = 0; !killed; i++) {
        const n = 1 + ((seed + i) % 4);
        sent++;
        try {
          const res = await fetch(`${base}/models/digits/predict`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ inputs: Array.from({ length: n }, () => sample) }),
          });
          const body = (await res.json()) as { predictions?: unknown[] };
          if (res.status === 200 && body.predictions) {
            acknowledged += body.predictions.length;
            answered++;
          }
        } catch {
          unanswered += n; // killed mid-request: never acknowledged
          return;
        }
      }
    };
    const clients = [0, 1, 2].map((s) => client(s));
    await waitFor(async () => answered >= 150, 'predictions to be served', 60_000, 20);
    api.child.kill('SIGKILL');
    killed = true;
    await Promise.all(clients);
    await new Promise((r) => (api.child.exitCode !== null || api.child.signalCode !== null ? r(undefined) : api.child.once('exit', r)));

    api = startProcess('api/server.ts', env);
    await up(api);
    const realised = async () => (await listEntries(db, runId)).filter((e) => e.kind === 'realised_revenue').reduce((s, e) => s + Number(e.quantity), 0);
    const booked = await waitFor(async () => ((await realised()) >= acknowledged ? realised() : undefined), 'the outbox to flush', 60_000, 200).catch(() =>
      realised(),
    );
    // Nothing more is booked once the outbox (the killed API's, flushed by the new one) is empty.
    const outbox = openSqlite({ path: path.join(dataDir, 'ledger-outbox.db') });
    cleanups.push(() => outbox.close());
    const outboxRows = async () => Number((await outbox.query<{ n: number }>('SELECT COUNT(*) AS n FROM ledger_outbox'))[0]?.n ?? 0);
    await waitFor(async () => (await outboxRows()) === 0, 'the outbox to drain', 60_000, 100).catch(() => undefined);
    const left = await outboxRows();
    const final = await realised();
    const batches = (await listEntries(db, runId)).filter((e) => e.kind === 'realised_revenue');
    const ids = batches.map((e) => e.id);
    figures('SIGKILL of the API while serving predictions, then restart', [
      ['prediction requests sent', sent],
      ['requests answered 200 before the kill', answered],
      ['predictions acknowledged (in 200 answers)', acknowledged],
      ['predictions in requests cut off by the kill', unanswered],
      ['predictions booked as realised revenue', final],
      ['booked batches / distinct', `${ids.length} / ${new Set(ids).size}`],
      ['outbox records left', left],
    ]);
    expect(booked).toBeGreaterThanOrEqual(acknowledged);
    // Not fewer than acknowledged, and no more than the acknowledged plus the one in-flight
    // request per client whose outbox write may have landed just before the kill.
    expect(final).toBeGreaterThanOrEqual(acknowledged);
    expect(final - acknowledged).toBeLessThanOrEqual(unanswered);
    expect(new Set(ids).size).toBe(ids.length);
    expect(left).toBe(0);
    await stopProcess(api.child);
  });
});
