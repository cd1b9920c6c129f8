// A worker SIGKILLed mid-pretrain (its whole process group, training child included): the usage
// of the killed attempt was written as it accrued, so once the worker is back on its data folder
// (its outbox flushed) the ledger holds the attempt's CPU time to within one heartbeat interval.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { allMigrations } from '../../app/runtime.js';
import { Engine } from '../../engine/index.js';
import { ArtifactStore } from '../../lib/artifacts.js';
import { migrate } from '../../lib/db/migrate.js';
import { openDb } from '../../lib/db/open.js';
import { openSqlite } from '../../lib/db/sqlite.js';
import { silentLogger } from '../../lib/logger.js';
import { processCpuSeconds } from '../../lib/process-cpu.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { StageRegistry } from '../../plugins/registry.js';
import { waitFor } from '../helpers/stack.js';

const root = path.resolve(import.meta.dirname, '../..');
/** The wrapper's heartbeat (and usage) interval for a stage with a 3 s heartbeat timeout: a third of it. */
const TICK_SECONDS = 1;

/** worker.ts as a real process, leading its own process group (so the group can be killed at once). */
function startWorker(env: Record<string, string>): { child: ChildProcess; output: () => string } {
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', 'worker.ts'], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out.slice(-4000) };
}

/** Pids of the processes whose parent is `pid` (Linux /proc). */
function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]) === pid) kids.push(Number(name));
    } catch {
      // gone
    }
  }
  return kids;
}

const isTrainingChild = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('child-main');
  } catch {
    return false;
  }
};

describe.skipIf(process.platform !== 'linux')('usage of a SIGKILLed worker', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  });

  it('books the killed pretrain attempt’s CPU time to within one heartbeat interval of what it used', { timeout: 300_000 }, async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'capstan-kill-worker-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const queue = `kill-${randomBytes(4).toString('hex')}`;
    const env = {
      CAPSTAN_DATA_DIR: dataDir,
      CAPSTAN_TASK_QUEUE: queue,
      CAPSTAN_LOG_LEVEL: 'info',
      CAPSTAN_SHUTDOWN_GRACE: '2s',
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    };
    let worker = startWorker(env);
    cleanups.push(() => void (worker.child.exitCode === null && worker.child.signalCode === null && process.kill(-worker.child.pid!, 'SIGKILL')));
    await waitFor(async () => worker.output().includes('worker up'), `the worker to start: ${worker.output()}`, 150_000, 200);

    const connection = await Connection.connect({ address: inject('temporalAddress') });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: inject('temporalNamespace') });
    const stages = new StageRegistry();
    for (const p of [dataPrepStage(), pretrainStage()]) stages.register(p as never);
    stages.freeze();
    const engineDb = await openDb({ sqlitePath: path.join(dataDir, 'engine-test.db') });
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
    const run = await engine.start({
      name: 'killed-mid-pretrain',
      stages: [
        { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 3000, seed: 3 } },
        { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 200 }, timeouts: { heartbeat: '3s' } },
      ],
    });
    cleanups.push(() =>
      client.workflow
        .getHandle(run.id)
        .terminate('test over')
        .then(
          () => undefined,
          () => undefined,
        ),
    );

    // The training child appears; the worker's CPU from then on, and the child's, is what the attempt uses.
    const wpid = worker.child.pid!;
    const trainer = await waitFor(async () => childrenOf(wpid).find(isTrainingChild), `the training child: ${worker.output()}`, 180_000, 50);
    const worker0 = (await processCpuSeconds(wpid))!;
    const sightedAt = performance.now();
    await waitFor(async () => ((await processCpuSeconds(trainer)) ?? 0) >= 6, 'the child to train for 6 CPU-seconds', 180_000, 100);
    const [childCpu, workerCpu] = [await processCpuSeconds(trainer), await processCpuSeconds(wpid)];
    process.kill(-wpid, 'SIGKILL');
    const wall = (performance.now() - sightedAt) / 1000;
    await waitFor(async () => worker.child.signalCode !== null, 'the worker to die', 10_000, 50);
    await client.workflow.getHandle(run.id).terminate('worker killed; the test reads its usage');
    const used = childCpu! + (workerCpu! - worker0);

    // A new life of the worker on the same folder flushes its outbox to the ledger.
    worker = startWorker(env);
    await waitFor(async () => worker.output().includes('worker up'), `the worker to start again: ${worker.output()}`, 150_000, 200);
    const outbox = openSqlite({ path: path.join(dataDir, 'ledger-outbox.db') });
    cleanups.push(() => outbox.close());
    await waitFor(
      async () => Number((await outbox.query<{ n: number }>('SELECT COUNT(*) AS n FROM ledger_outbox WHERE run_id = ?', [run.id]))[0]?.n ?? 0) === 0,
      'the outbox to be flushed',
      60_000,
      100,
    );
    const ledgerDb = await openDb({ sqlitePath: path.join(dataDir, 'capstan.db') });
    cleanups.push(() => ledgerDb.close());
    const rows = await ledgerDb.query<{ cpu_ms: number; wall_ms: number; partial: number; attempt: number }>(
      "SELECT cpu_ms, wall_ms, partial, attempt FROM ledger_usage WHERE run_id = ? AND stage_id = 'pretrain'",
      [run.id],
    );
    const booked = rows[0] ? Number(rows[0].cpu_ms) / 1000 : 0;
    // One interval's worth of CPU at the rate the attempt used it (the child and the worker).
    const rate = used / wall;
    const interval = TICK_SECONDS * rate;
    const figures = `used ${used.toFixed(3)} CPU-s (child ${childCpu!.toFixed(3)}, worker ${(workerCpu! - worker0).toFixed(3)}) over ${wall.toFixed(1)} s; booked ${booked.toFixed(3)} CPU-s (${rows.length} line, partial ${rows[0]?.partial}); one interval = ${interval.toFixed(3)} CPU-s`;
    console.log(`SIGKILLed worker mid-pretrain: ${figures}`);
    expect(rows, figures).toHaveLength(1);
    expect(rows[0]).toMatchObject({ attempt: 1, partial: 1 });
    expect(booked, figures).toBeGreaterThanOrEqual(used - interval);
    // Not more than it used (the worker's CPU between the attempt's start and the child's is in the booking, not in `used`).
    expect(booked, figures).toBeLessThanOrEqual(used + 0.5);
  });
});
