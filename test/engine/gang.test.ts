// Gang scheduling of data-parallel stages (docs/adr/0008-gang-scheduling.md): a stage's replicas
// get all their slots at once from the queue's slot keeper or wait holding none; a gang larger
// than the queue pauses with the reason; a replica that fails for good takes its siblings down;
// an operator retry meets in its own folder; devices come from the worker's pool.
import { readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSpec } from '../../engine/spec.js';
import { runPipelineWorkflow } from '../../workflows/index.js';
import { z } from 'zod';
import { DevicePool, detectGpus, parseDevices, resolveDevices } from '../../activities/devices.js';
import { operatorRoundOf } from '../../activities/stage-context.js';
import { loadConfig } from '../../app/config.js';
import { queueSlots } from '../../app/workers.js';
import { StageError } from '../../lib/errors.js';
import { defineStage, PLUGIN_API_VERSION, type StageContext } from '../../plugins/contract.js';
import { checkGangCapacity, slotKeeperId, takesGangSlots } from '../../workflows/gang.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const onAbort = () => (clearTimeout(t), reject(signal.reason));
    const t = setTimeout(() => (signal.removeEventListener('abort', onAbort), resolve()), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
const exists = (p: string) => stat(p).then(() => true, () => false);

/** Replicas meet at a file barrier (like multi-device fit), hold for `holdMs`, and can fail on purpose. */
const gangStage = defineStage({
  name: 'test:gang',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'replicas that must run at the same time',
  paramsSchema: z.object({
    replicas: z.number().int().min(1).max(8).default(2),
    holdMs: z.number().int().min(0).default(500),
    failReplica: z.number().int().min(-1).default(-1),
    barrierTimeoutMs: z.number().int().min(100).default(8000),
  }),
  consumes: [],
  produces: ['note'],
  resource: 'gpu',
  retry: { maximumAttempts: 2, initialIntervalMs: 100 },
  dataParallel: {
    replicas: (p) => p.replicas,
    async reduce(ctx, _p, _i, results) {
      const note = await ctx.output('note', (dir) => writeFile(path.join(dir, 'note.txt'), 'ok'));
      const metrics: Record<string, string | number> = { syncDir: await ctx.checkpointDir({ shared: true }) };
      results.forEach((r, i) => {
        metrics[`start${i}`] = r.metrics.start as number;
        metrics[`end${i}`] = r.metrics.end as number;
        metrics[`device${i}`] = r.metrics.device as string;
      });
      return { outputs: { note }, metrics };
    },
  },
  async run(ctx: StageContext, p) {
    const i = ctx.replica?.index ?? 0;
    const n = ctx.replica?.count ?? 1;
    const dir = await ctx.checkpointDir({ shared: true });
    await writeFile(path.join(dir, `arrive-${i}`), String(Date.now()));
    const deadline = Date.now() + p.barrierTimeoutMs;
    for (;;) {
      const here = await Promise.all(Array.from({ length: n }, (_, k) => exists(path.join(dir, `arrive-${k}`))));
      if (here.every(Boolean)) break;
      if (Date.now() > deadline) throw new StageError(`barrier: waited ${p.barrierTimeoutMs} ms for the other replicas`, { type: 'BARRIER_TIMEOUT', retryable: false });
      ctx.heartbeat({ waiting: true });
      await sleep(25, ctx.signal);
    }
    const start = Date.now();
    try {
      const end = start + p.holdMs;
      while (Date.now() < end) {
        if (i === p.failReplica && Date.now() > start + 300) throw new StageError(`replica ${i} failed on purpose`, { type: 'PLANNED', retryable: false });
        ctx.heartbeat({ holding: true });
        await sleep(50, ctx.signal);
      }
    } catch (e) {
      if (ctx.signal.aborted) await writeFile(path.join(dir, `cancelled-${i}`), String(Date.now()));
      throw e;
    }
    return { outputs: {}, metrics: { start, end: Date.now(), device: ctx.device?.label ?? 'none' } };
  },
});

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins: [gangStage] });
});
afterAll(async () => {
  await stack?.close();
});

const RUN = `id status pausedStages stages { id status attempts metrics error errorType }`;
async function start(name: string, params: Record<string, unknown>): Promise<string> {
  const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
    s: { name, stages: [{ id: 'fit', plugin: 'test:gang', params, timeouts: { heartbeat: '2s' } }] },
  });
  expect(r.errors).toBeUndefined();
  return r.data.startPipeline.id;
}
async function waitStatus(id: string, statuses: string[]) {
  return waitFor(async () => {
    const run = (await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).data?.run;
    return run && statuses.includes(run.status) ? run : undefined;
  }, `run ${id} to be ${statuses.join('/')}`, 90_000, 200);
}

describe('gang scheduling on a real dev server (gpu queue with 2 slots)', () => {
  it('reports the queue capacity through the slot keeper', async () => {
    const view = await waitFor(async () => (await queueSlots(stack.client, stack.taskQueues.gpu))?.capacity === 2 && queueSlots(stack.client, stack.taskQueues.gpu), 'the keeper');
    expect(view).toMatchObject({ queue: stack.taskQueues.gpu, capacity: 2, free: 2, holders: [], waiting: [] });
    expect(view!.workers).toHaveLength(1);
  });

  it('runs two 2-replica gangs started together one after the other, each on the pool devices', async () => {
    const ids = await Promise.all([start('gang-a', { replicas: 2, holdMs: 1500 }), start('gang-b', { replicas: 2, holdMs: 1500 })]);
    const runs = await Promise.all(ids.map((id) => waitStatus(id, ['COMPLETED', 'PAUSED', 'FAILED'])));
    for (const r of runs) expect(r.status, JSON.stringify(r.stages)).toBe('COMPLETED');
    const span = (m: any) => [Math.min(m.start0, m.start1), Math.max(m.end0, m.end1)];
    const [a, b] = runs.map((r) => span(r.stages[0].metrics)).sort((x, y) => x[0]! - y[0]!);
    // The second gang started only after the first ended: they took turns.
    expect(b![0]).toBeGreaterThanOrEqual(a![1]!);
    for (const r of runs) expect([r.stages[0].metrics.device0, r.stages[0].metrics.device1].sort()).toEqual(['cpu:0', 'cpu:1']);
    // Each attempt was metered once; no GPU ids booked for cpu devices.
    const usage = await stack.db.query<{ run_id: string; activity_id: string; gpu_devices: string }>(
      `SELECT run_id, activity_id, gpu_devices FROM ledger_usage WHERE run_id IN (?, ?) ORDER BY run_id, activity_id`,
      ids,
    );
    for (const id of ids) {
      expect(usage.filter((u) => u.run_id === id).map((u) => u.activity_id)).toEqual(['stage:fit:reduce', 'stage:fit:replica-0', 'stage:fit:replica-1']);
    }
    expect(usage.every((u) => u.gpu_devices === '' || u.gpu_devices === '[]')).toBe(true);
    const after = await queueSlots(stack.client, stack.taskQueues.gpu);
    expect(after).toMatchObject({ free: 2, holders: [], waiting: [] });
  });

  it('refuses a gang larger than the queue at validation; one that got past it (capacity shrank) pauses with the reason, holding nothing', async () => {
    // Through the API: refused before anything starts.
    const refused = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: { name: 'gang-too-big', stages: [{ id: 'fit', plugin: 'test:gang', params: { replicas: 3 }, timeouts: { heartbeat: '2s' } }] },
    });
    expect(refused.errors?.[0]?.extensions.code).toBe('SPEC_INVALID');
    expect(refused.errors?.[0]?.extensions.issues).toEqual([
      { path: 'stages[0].params', code: 'GANG_CAPACITY', message: `stage fit: 3 replicas need 3 slots at once, but task queue ${stack.taskQueues.gpu} has 2` },
    ]);
    expect((await stack.client.workflow.count(`CapstanPipeline = 'gang-too-big'`)).count).toBe(0);
    // A run whose input already asks for more (as when workers left after it started) pauses instead.
    const input = resolveSpec({ name: 'gang-too-big', stages: [{ id: 'fit', plugin: 'test:gang', params: { replicas: 3 }, timeouts: { heartbeat: '2s' } }] }, stack.stages, { taskQueues: stack.taskQueues });
    const id = 'pipeline/gang-too-big/late1';
    await stack.client.workflow.start(runPipelineWorkflow, { taskQueue: stack.taskQueues.workflows, workflowId: id, args: [input] });
    const run = await waitStatus(id, ['PAUSED', 'FAILED']);
    expect(run.status).toBe('PAUSED');
    expect(run.stages[0]).toMatchObject({ status: 'FAILED', errorType: 'GANG_CAPACITY' });
    expect(run.stages[0].error).toContain(`needs 3 slots at once, but task queue ${stack.taskQueues.gpu} has 2`);
    expect(await queueSlots(stack.client, stack.taskQueues.gpu)).toMatchObject({ free: 2, holders: [], waiting: [] });
    await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "too big") { id } }`, { id });
  });

  it('cancels the siblings of a replica that failed for good; the operator retry meets in its own folder', async () => {
    const id = await start('gang-fail', { replicas: 2, holdMs: 60_000, failReplica: 1 });
    const t0 = Date.now();
    const paused = await waitStatus(id, ['PAUSED', 'FAILED']);
    expect(paused.status).toBe('PAUSED');
    // Far sooner than replica 0's 60 s hold: it was cancelled, not waited for.
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(paused.stages[0]).toMatchObject({ status: 'FAILED', errorType: 'PLANNED' });
    const attempts = await stack.db.query<{ activity_id: string; outcome: string }>(`SELECT activity_id, outcome FROM stage_attempts WHERE run_id = ? ORDER BY activity_id, attempt`, [id]);
    expect(attempts).toEqual([
      { activity_id: 'stage:fit:replica-0', outcome: 'cancelled' },
      { activity_id: 'stage:fit:replica-1', outcome: 'failed' },
    ]);
    const round0 = stack.artifacts.checkpointDir(id, 'fit');
    expect((await readdir(round0)).sort()).toEqual(expect.arrayContaining(['arrive-0', 'arrive-1', 'cancelled-0']));
    expect(await queueSlots(stack.client, stack.taskQueues.gpu)).toMatchObject({ free: 2, holders: [] });

    const ok = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "fit", params: { replicas: 2, holdMs: 200 }) { id } }`, { id });
    expect(ok.errors).toBeUndefined();
    const done = await waitStatus(id, ['COMPLETED', 'PAUSED', 'FAILED']);
    expect(done.status).toBe('COMPLETED');
    expect(done.stages[0].metrics.syncDir).toBe(path.join(round0, 'retry-1'));
  });
});

describe('a holder that never releases', () => {
  it('frees the slots of a terminated run once someone waits (the keeper checks holders)', async () => {
    const a = await start('gang-holder', { replicas: 2, holdMs: 120_000 });
    await waitFor(async () => (await queueSlots(stack.client, stack.taskQueues.gpu))?.holders.length === 1, 'run a to hold the slots', 30_000);
    const b = await start('gang-next', { replicas: 2, holdMs: 200 });
    await waitFor(async () => (await queueSlots(stack.client, stack.taskQueues.gpu))?.waiting.length === 1, 'run b to wait', 30_000);
    // Terminated: no code of run a runs again, so it never releases.
    await stack.client.workflow.getHandle(a).terminate('test: a run that never releases');
    const t0 = Date.now();
    const done = await waitStatus(b, ['COMPLETED', 'PAUSED', 'FAILED']);
    expect(done.status).toBe('COMPLETED');
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(await queueSlots(stack.client, stack.taskQueues.gpu)).toMatchObject({ free: 2, holders: [], waiting: [] });
  });
});

describe('gang helpers and the device pool (no server)', () => {
  it('checkGangCapacity names the stages that can never get their slots', () => {
    const stages = [
      { id: 'prep', replicas: 1, taskQueue: 'q-cpu' },
      { id: 'fit', replicas: 3, taskQueue: 'q-gpu' },
      { id: 'fit2', replicas: 2, taskQueue: 'q-gpu' },
    ];
    expect(checkGangCapacity(stages, (q) => (q === 'q-gpu' ? 2 : 4))).toEqual(['stage fit: 3 replicas need 3 slots at once, but task queue q-gpu has 2']);
    expect(checkGangCapacity(stages, () => undefined)).toEqual([]);
    expect(takesGangSlots({ replicas: 1, taskQueue: 'q-cpu' })).toBe(false);
    expect(takesGangSlots({ replicas: 1, taskQueue: 'q-gpu' })).toBe(true);
    expect(takesGangSlots({ replicas: 2, taskQueue: 'q-cpu' })).toBe(true);
    expect(slotKeeperId('capstan-gpu')).toBe('capstan/slots/capstan-gpu');
    expect(operatorRoundOf('stage:fit#2:replica-0')).toBe(2);
    expect(operatorRoundOf('stage:fit:reduce')).toBe(0);
    expect(operatorRoundOf('stage:fit#11')).toBe(11);
  });

  it('parses CAPSTAN_GPUS, detects GPUs, and hands devices out from the pool, not by index', async () => {
    expect(parseDevices('0,1')).toEqual([{ kind: 'gpu', id: '0' }, { kind: 'gpu', id: '1' }]);
    expect(parseDevices('cpu:3').map((d) => `${d.kind}:${d.id}`)).toEqual(['cpu:0', 'cpu:1', 'cpu:2']);
    expect(() => parseDevices('0,0')).toThrow(/repeat/);
    expect(() => parseDevices('cpu:0')).toThrow(/1 ≤ N/);
    expect(() => parseDevices('a b')).toThrow(/bad GPU id/);
    expect(detectGpus(() => 'GPU 0: NVIDIA A100 (UUID: GPU-1)\nGPU 1: NVIDIA A100 (UUID: GPU-2)\n')).toEqual(['0', '1']);
    expect(detectGpus(() => { throw new Error('ENOENT'); })).toEqual([]);
    expect(resolveDevices(undefined, 2, () => ['3'])).toEqual([{ kind: 'gpu', id: '3' }]);
    expect(resolveDevices(undefined, 2, () => [])).toEqual([{ kind: 'cpu', id: '0' }, { kind: 'cpu', id: '1' }]);
    expect(resolveDevices('5,7', 2, () => ['0'])).toEqual([{ kind: 'gpu', id: '5' }, { kind: 'gpu', id: '7' }]);

    const pool = new DevicePool(parseDevices('4,6'), 'h1');
    const a = await pool.take();
    const b = await pool.take();
    expect([a.label, b.label, a.env, b.env, a.host]).toEqual(['gpu:4', 'gpu:6', { CUDA_VISIBLE_DEVICES: '4' }, { CUDA_VISIBLE_DEVICES: '6' }, 'h1']);
    const waiting = pool.take();
    pool.give(b);
    expect((await waiting).id).toBe('6');
    const ac = new AbortController();
    const aborted = pool.take(ac.signal);
    ac.abort(new Error('cancelled'));
    await expect(aborted).rejects.toThrow('cancelled');
    pool.give(a);
    expect(pool.available).toBe(1);
    const cpu = await new DevicePool(parseDevices('cpu:1')).take();
    expect(cpu.env).toEqual({});

    expect(loadConfig({ CAPSTAN_GPUS: '0,1' }, '/tmp')).toMatchObject({ gpuSlots: 2, gpus: [{ kind: 'gpu', id: '0' }, { kind: 'gpu', id: '1' }], slotLeaseMs: 60_000 });
    expect(loadConfig({ CAPSTAN_GPU_SLOTS: '3' }, '/tmp').gpuSlots).toBe(3);
    expect(() => loadConfig({ CAPSTAN_GPUS: '0,1', CAPSTAN_GPU_SLOTS: '3' }, '/tmp')).toThrow(/one per device/);
    expect(() => loadConfig({ CAPSTAN_GPUS: 'x y' }, '/tmp')).toThrow(/CAPSTAN_GPUS/);
  });
});
