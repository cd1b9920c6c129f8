// Fault tests of multi-device fit with real processes (issue 10): replicas are child processes of
// the worker; the worker itself is SIGKILLed; two pipelines share one worker's 2 gpu slots.
// Each asserts that nothing is lost (runs complete, resume from the last average) and nothing is
// booked twice (one metered, succeeded attempt per activity).
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createWorkers } from '../../app/workers.js';
import { silentLogger } from '../../lib/logger.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { multiDeviceFitStage } from '../../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { queueSlots } from '../../app/workers.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const GPU_WORKER = fileURLToPath(new URL('./fixtures/gpu-worker.ts', import.meta.url));
const tf = process.env.CAPSTAN_TF_BACKEND ? { tfBackend: process.env.CAPSTAN_TF_BACKEND as 'wasm' } : {};

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins: [dataPrepStage(), pretrainStage(tf), multiDeviceFitStage(tf)] });
});
const children: ChildProcess[] = [];
let ownWorkers: { workers: Worker[]; running: Promise<unknown>[]; connection: NativeConnection } | undefined;
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (ownWorkers) {
    for (const w of ownWorkers.workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(ownWorkers.running);
    await ownWorkers.connection.close();
  }
  await stack?.close();
});

const spec = (name: string, fit: Record<string, unknown>) => ({
  name,
  stages: [
    { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 2000 } },
    { id: 'train', plugin: 'core:pretrain', params: { epochs: 1 } },
    {
      id: 'fit',
      plugin: 'core:multi-device-fit',
      params: { replicas: 2, ...fit },
      timeouts: { heartbeat: '3s' },
      retry: { maximumAttempts: 4, initialInterval: '500ms' },
    },
  ],
});
async function start(s: unknown): Promise<string> {
  const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s });
  expect(r.errors).toBeUndefined();
  return r.data.startPipeline.id;
}
const RUN = `id status stages { id status attempts metrics error }`;
async function waitClosed(id: string) {
  return waitFor(
    async () => {
      const run = (await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).data?.run;
      return run && !['RUNNING'].includes(run.status) ? run : undefined;
    },
    `run ${id} to close`,
    300_000,
    500,
  );
}

/** One metered, succeeded attempt per activity of the stage; never two rows for one attempt. */
async function expectBookedOnce(runId: string, activities: string[]) {
  const rows = await stack.db.query<{ activity_id: string; attempt: number; succeeded: number }>(
    `SELECT activity_id, attempt, succeeded FROM ledger_usage WHERE run_id = ? AND stage_id = 'fit' ORDER BY activity_id, attempt`,
    [runId],
  );
  const keys = rows.map((r) => `${r.activity_id}#${r.attempt}`);
  expect(new Set(keys).size).toBe(keys.length);
  expect(rows.filter((r) => r.succeeded).map((r) => r.activity_id)).toEqual(activities);
  return { lines: rows.length, attempts: new Set(keys).size, succeeded: rows.filter((r) => r.succeeded).length };
}

/** The highest round with averaged weights in the run's fit folder. */
async function averagedRound(runId: string): Promise<number> {
  let best = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name === 'avg.bin') best = Math.max(best, Number(/round-(\d+)/.exec(p)?.[1] ?? 0));
    }
  };
  await walk(stack.artifacts.checkpointDir(runId, 'fit'));
  return best;
}

function startGpuWorker(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', GPU_WORKER], {
    env: {
      ...process.env,
      CAPSTAN_DATA_DIR: stack.dataDir,
      CAPSTAN_TASK_QUEUE: stack.taskQueues.workflows,
      CAPSTAN_GPUS: 'cpu:2',
      CAPSTAN_SLOT_LEASE: '5s',
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve(child));
    child.once('exit', (code) => reject(new Error(`gpu worker exited (${code}) before ready: ${err}`)));
  });
}

describe('multi-device fit under contention and crashes', () => {
  it('two default-shaped pipelines started together on one worker with 2 gpu slots both complete, one fit after the other', async () => {
    const ids = await Promise.all([start(spec('contend-a', { epochs: 1, syncEverySteps: 10 })), start(spec('contend-b', { epochs: 1, syncEverySteps: 10 }))]);
    const runs = await Promise.all(ids.map(waitClosed));
    for (const r of runs) {
      expect(r.status, JSON.stringify(r.stages.map((s: any) => [s.id, s.status, s.error]))).toBe('COMPLETED');
      const fit = r.stages[2];
      expect(fit.metrics.replicas).toBe(2);
      expect([fit.metrics.deviceReplica0, fit.metrics.deviceReplica1].map((d: string) => d.split('/')[1]).sort()).toEqual(['cpu:0', 'cpu:1']);
    }
    // The replicas of one fit ran while the other fit's did not (slot grants, FIFO).
    const spans = [];
    for (const id of ids) {
      const a = await stack.db.query<{ started_at: string; closed_at: string }>(
        `SELECT started_at, closed_at FROM stage_attempts WHERE run_id = ? AND stage_id = 'fit' AND activity_id LIKE '%replica%'`,
        [id],
      );
      expect(a).toHaveLength(2);
      spans.push([Math.min(...a.map((x) => Date.parse(x.started_at))), Math.max(...a.map((x) => Date.parse(x.closed_at)))] as const);
    }
    spans.sort((x, y) => x[0] - y[0]);
    expect(spans[1]![0]).toBeGreaterThanOrEqual(spans[0]![1]);
    const booked = [];
    for (const id of ids) booked.push(await expectBookedOnce(id, ['stage:fit:reduce', 'stage:fit:replica-0', 'stage:fit:replica-1']));
    console.info(
      `[fit-faults] contention: runs started 2, completed ${runs.filter((r) => r.status === 'COMPLETED').length}, lost 0; fit usage lines ${booked.map((b) => b.lines).join(' + ')} for ${booked.map((b) => b.attempts).join(' + ')} attempts (booked twice: 0)`,
    );
  });

  it('SIGKILL of the worker mid-replica: a new worker finishes the fit, resuming from the last average', async () => {
    // Workflows and cpu stages in this process; the gpu queue only in a worker process of its own.
    await stack.stopWorkers();
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const workers = await createWorkers({
      connection,
      namespace: inject('temporalNamespace'),
      taskQueues: stack.taskQueues,
      roles: ['workflows', 'cpu'],
      activities: {
        stages: stack.stages,
        artifacts: stack.artifacts,
        services: stack.runtime.services,
        logger: silentLogger,
        heartbeatEveryMs: 500,
        meter: stack.runtime.meter,
        cache: stack.runtime.cache,
      },
      shutdownGraceTime: '2s',
    });
    ownWorkers = { workers, running: workers.map((w) => w.run()), connection };
    const first = await startGpuWorker();

    const id = await start(spec('sigkill', { epochs: 4, syncEverySteps: 4 }));
    const seen = await waitFor(
      async () => {
        const r = await averagedRound(id);
        return r >= 3 ? r : undefined;
      },
      'three averaged rounds',
      240_000,
      50,
    );
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    await startGpuWorker();

    const run = await waitClosed(id);
    expect(run.status, JSON.stringify(run.stages.map((s: any) => [s.id, s.status, s.error]))).toBe('COMPLETED');
    const fit = run.stages[2];
    expect(fit.attempts).toBeGreaterThanOrEqual(2);
    // Both replicas were retried on the new worker and started from an average at or after the one seen before the kill.
    expect(fit.metrics.resumedFromRoundReplica0).toBeGreaterThanOrEqual(seen);
    expect(fit.metrics.resumedFromRoundReplica1).toBeGreaterThanOrEqual(seen);
    expect(fit.metrics.testAccuracy).toBeGreaterThan(0.5);
    const booked = await expectBookedOnce(id, ['stage:fit:reduce', 'stage:fit:replica-0', 'stage:fit:replica-1']);
    console.info(
      `[fit-faults] SIGKILL mid-replica after round ${seen}: runs started 1, completed 1, lost 0; resumed from rounds ${fit.metrics.resumedFromRoundReplica0}/${fit.metrics.resumedFromRoundReplica1}; fit usage lines ${booked.lines} for ${booked.attempts} attempts (booked twice: 0)`,
    );
    // The grant was given back; the dead worker's slots lapsed with its lease.
    const slots = await waitFor(
      async () => {
        const v = await queueSlots(stack.client, stack.taskQueues.gpu);
        return v && v.workers.length === 1 ? v : undefined;
      },
      'the dead worker to drop out',
      30_000,
    );
    expect(slots).toMatchObject({ capacity: 2, free: 2, holders: [], waiting: [] });
  });
});
