// Gang scheduling of data-parallel stages (docs/adr/0008-gang-scheduling.md): a stage's replicas
// get all their slots at once from the queue's slot keeper or wait holding none; a gang larger
// than the queue pauses with the reason; a replica that fails for good takes its siblings down;
// an operator retry meets in its own folder; devices come from the worker's pool.
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { resolveSpec } from '../../engine/spec.js';
import { runPipelineWorkflow } from '../../workflows/index.js';
import { z } from 'zod';
import { DevicePool, detectGpus, parseDevices, resolveDevices } from '../../activities/devices.js';
import { operatorRoundOf } from '../../activities/stage-context.js';
import { loadConfig } from '../../app/config.js';
import { queueSlots } from '../../app/workers.js';
import { StageError } from '../../lib/errors.js';
import { defineStage, PLUGIN_API_VERSION, type StageContext } from '../../plugins/contract.js';
import { checkGangCapacity, registerSlotsSignal, slotKeeperId, takesGangSlots, unregisterSlotsSignal } from '../../workflows/gang.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

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
      if (Date.now() > deadline)
        throw new StageError(`barrier: waited ${p.barrierTimeoutMs} ms for the other replicas`, { type: 'BARRIER_TIMEOUT', retryable: false });
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
  return waitFor(
    async () => {
      const run = (await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).data?.run;
      return run && statuses.includes(run.status) ? run : undefined;
    },
    `run ${id} to be ${statuses.join('/')}`,
    90_000,
    200,
  );
}

describe('gang scheduling on a real dev server (gpu queue with 2 slots)', () => {
  it('reports the queue capacity through the slot keeper', async () => {
    const view = await waitFor(
      async () => (await queueSlots(stack.client, stack.taskQueues.gpu))?.capacity === 2 && queueSlots(stack.client, stack.taskQueues.gpu),
      'the keeper',
    );
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
    const input = resolveSpec(
      { name: 'gang-too-big', stages: [{ id: 'fit', plugin: 'test:gang', params: { replicas: 3 }, timeouts: { heartbeat: '2s' } }] },
      stack.stages,
      { taskQueues: stack.taskQueues },
    );
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
    const attempts = await stack.db.query<{ activity_id: string; outcome: string }>(
      `SELECT activity_id, outcome FROM stage_attempts WHERE run_id = ? ORDER BY activity_id, attempt`,
      [id],
    );
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
    expect(parseDevices('0,1')).toEqual([
      { kind: 'gpu', id: '0' },
      { kind: 'gpu', id: '1' },
    ]);
    expect(parseDevices('cpu:3').map((d) => `${d.kind}:${d.id}`)).toEqual(['cpu:0', 'cpu:1', 'cpu:2']);
    expect(() => parseDevices('0,0')).toThrow(/repeat/);
    expect(() => parseDevices('cpu:0')).toThrow(/1 ≤ N/);
    expect(() => parseDevices('a b')).toThrow(/bad GPU id/);
    expect(detectGpus(() => 'GPU 0: NVIDIA A100 (UUID: GPU-1)\nGPU 1: NVIDIA A100 (UUID: GPU-2)\n')).toEqual(['0', '1']);
    expect(
      detectGpus(() => {
        throw new Error('ENOENT');
      }),
    ).toEqual([]);
    expect(resolveDevices(undefined, 2, () => ['3'])).toEqual([{ kind: 'gpu', id: '3' }]);
    expect(resolveDevices(undefined, 2, () => [])).toEqual([
      { kind: 'cpu', id: '0' },
      { kind: 'cpu', id: '1' },
    ]);
    expect(resolveDevices('5,7', 2, () => ['0'])).toEqual([
      { kind: 'gpu', id: '5' },
      { kind: 'gpu', id: '7' },
    ]);

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

    expect(loadConfig({ CAPSTAN_GPUS: '0,1' }, '/tmp')).toMatchObject({
      gpuSlots: 2,
      gpus: [
        { kind: 'gpu', id: '0' },
        { kind: 'gpu', id: '1' },
      ],
      slotLeaseMs: 60_000,
    });
    expect(loadConfig({ CAPSTAN_GPU_SLOTS: '3' }, '/tmp').gpuSlots).toBe(3);
    expect(() => loadConfig({ CAPSTAN_GPUS: '0,1', CAPSTAN_GPU_SLOTS: '3' }, '/tmp')).toThrow(/one per device/);
    expect(() => loadConfig({ CAPSTAN_GPUS: 'x y' }, '/tmp')).toThrow(/CAPSTAN_GPUS/);
    // Revocation grace follows the lease unless set; the start timeout and re-queues are bounded.
    expect(loadConfig({}, '/tmp')).toMatchObject({ slotRevokeAfterMs: 60_000, gang: { replicaStartTimeoutMs: 120_000, requeues: 2 } });
    expect(loadConfig({ CAPSTAN_SLOT_LEASE: '9s' }, '/tmp').slotRevokeAfterMs).toBe(9000);
    expect(loadConfig({ CAPSTAN_SLOT_REVOKE_AFTER: '5s', CAPSTAN_GANG_START_TIMEOUT: '30s', CAPSTAN_GANG_REQUEUES: '0' }, '/tmp')).toMatchObject({
      slotRevokeAfterMs: 5000,
      gang: { replicaStartTimeoutMs: 30_000, requeues: 0 },
    });
    expect(() => loadConfig({ CAPSTAN_SLOT_REVOKE_AFTER: 'soon' }, '/tmp')).toThrow(/CAPSTAN_SLOT_REVOKE_AFTER: must be a duration of at least 1s/);
    expect(() => loadConfig({ CAPSTAN_GANG_START_TIMEOUT: '10ms' }, '/tmp')).toThrow(/CAPSTAN_GANG_START_TIMEOUT: must be a duration of at least 1s/);
    expect(() => loadConfig({ CAPSTAN_GANG_REQUEUES: '-1' }, '/tmp')).toThrow(/CAPSTAN_GANG_REQUEUES/);
  });
});

// Slots that match live capacity (issue 21): a stack of its own with short leases, grace and start
// timeout, and "ghost" reports signalled straight to the keeper: slots no worker of this test has,
// like the report of a worker that died.
describe('slots that match live capacity', () => {
  let live: TestStack;
  const LEASE_MS = 3000;
  beforeAll(async () => {
    live = await startTestStack({
      plugins: [gangStage],
      env: { CAPSTAN_SLOT_LEASE: '3s', CAPSTAN_SLOT_REVOKE_AFTER: '2s', CAPSTAN_GANG_START_TIMEOUT: '6s', CAPSTAN_GANG_REQUEUES: '1' },
    });
  });
  afterAll(async () => {
    await live?.close();
  });

  const gpu = () => live.taskQueues.gpu;
  const keeper = () => live.client.workflow.getHandle(slotKeeperId(gpu()));
  const slots = () => queueSlots(live.client, gpu());
  const ghost = (worker: string, slots: number, ttlMs: number) => keeper().signal(registerSlotsSignal, { worker, slots, ttlMs });
  const unghost = (worker: string) => keeper().signal(unregisterSlotsSignal, { worker });
  async function startLive(name: string, params: Record<string, unknown>): Promise<string> {
    // Straight to the workflow: the API would refuse a gang larger than the live capacity.
    const input = resolveSpec({ name, stages: [{ id: 'fit', plugin: 'test:gang', params, timeouts: { heartbeat: '2s' } }] }, live.stages, {
      taskQueues: live.taskQueues,
    });
    const id = `pipeline/${name}/${Date.now().toString(36)}`;
    await live.client.workflow.start(runPipelineWorkflow, {
      taskQueue: live.taskQueues.workflows,
      workflowId: id,
      args: [{ ...input, gang: live.runtime.config.gang }],
    });
    return id;
  }
  const RUN_EV = `id status stages { id status error errorType } events { type stageId message }`;
  async function waitLive(id: string, statuses: string[], ms = 150_000) {
    let last: unknown;
    try {
      return await waitFor(
        async () => {
          const run = (await live.gql(`query($id: ID!) { run(id: $id) { ${RUN_EV} } }`, { id })).data?.run;
          last = run;
          return run && statuses.includes(run.status) ? run : undefined;
        },
        `run ${id} to be ${statuses.join('/')}`,
        ms,
        200,
      );
    } catch (e) {
      // What the run was doing, and what the keeper held, when the wait gave up.
      throw new Error(`${(e as Error).message}; last seen: ${JSON.stringify(last)}; slots: ${JSON.stringify(await slots().catch(() => undefined))}`);
    }
  }

  it('a dead worker’s report drops out within one lease', async () => {
    await waitFor(async () => (await slots())?.capacity === 2 && true, 'the live worker to report');
    await ghost('ghost-dead', 2, LEASE_MS);
    await waitFor(async () => (await slots())?.capacity === 4 && true, 'the ghost to count', 10_000, 100);
    const t0 = Date.now();
    // Never renewed (its worker is "dead"): gone within one lease, plus a little for the keeper's timer.
    await waitFor(async () => (await slots())?.capacity === 2 && true, 'the dead report to drop out', LEASE_MS + 3000, 100);
    expect(Date.now() - t0).toBeLessThanOrEqual(LEASE_MS + 3000);
    expect((await slots())!.workers.map((w) => w.worker)).not.toContain('ghost-dead');
  });

  it('capacity falling below what a gang holds: the keeper revokes it, the run gives its slots back, asks again and pauses with the capacity reason', async () => {
    await ghost('ghost-a', 2, 10 * 60_000);
    await waitFor(async () => (await slots())?.capacity === 4 && true, 'capacity 4');
    const id = await startLive('gang-revoked', { replicas: 3, holdMs: 120_000, barrierTimeoutMs: 120_000 });
    // Granted 3 of 4; replica 2 cannot start (the live worker has 2 devices).
    await waitFor(async () => (await slots())?.holders.some((h) => h.count === 3) && true, 'the gang to hold 3 slots', 30_000);
    const t0 = Date.now();
    await unghost('ghost-a');
    const run = await waitLive(id, ['PAUSED', 'FAILED', 'COMPLETED']);
    expect(run.status).toBe('PAUSED');
    // Bounded: the 2 s grace plus cancelling the replicas, well before the 6 s start timeout would have counted twice.
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(run.stages[0]).toMatchObject({ status: 'FAILED', errorType: 'GANG_CAPACITY' });
    expect(run.stages[0].error).toContain(`needs 3 slots at once, but task queue ${gpu()} has 2`);
    expect(run.stages[0].error).toContain('its slots were revoked');
    const requeued = run.events.filter((e: any) => e.type === 'STAGE_REQUEUED');
    expect(requeued).toHaveLength(1);
    expect(requeued[0].message).toContain(`task queue ${gpu()} has 2 live slot(s) but 3 were held`);
    expect(await slots()).toMatchObject({ capacity: 2, free: 2, holders: [], waiting: [] });
    await live.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "test over") { id } }`, { id });
  });

  it('a revoked gang that still fits asks again at the back of the queue and completes', async () => {
    await ghost('ghost-b', 2, 10 * 60_000);
    await waitFor(async () => (await slots())?.capacity === 4 && true, 'capacity 4');
    // a holds 2 (runs on the live devices), b holds 2 more that only the ghost "has".
    const a = await startLive('gang-old', { replicas: 2, holdMs: 8000, barrierTimeoutMs: 60_000 });
    await waitFor(async () => (await slots())?.holders.length === 1 && true, 'a to hold', 30_000);
    const b = await startLive('gang-new', { replicas: 2, holdMs: 300, barrierTimeoutMs: 60_000 });
    await waitFor(async () => (await slots())?.holders.length === 2 && true, 'b to hold', 30_000);
    await unghost('ghost-b');
    const [ra, rb] = await Promise.all([waitLive(a, ['COMPLETED', 'PAUSED', 'FAILED']), waitLive(b, ['COMPLETED', 'PAUSED', 'FAILED'])]);
    expect(ra.status).toBe('COMPLETED');
    expect(ra.events.some((e: any) => e.type === 'STAGE_REQUEUED')).toBe(false);
    // b, the newest holder, was revoked, re-queued, and ran once a's slots were free.
    expect(rb.status).toBe('COMPLETED');
    expect(rb.events.filter((e: any) => e.type === 'STAGE_REQUEUED').map((e: any) => e.message)).toEqual([expect.stringContaining('its slots were revoked')]);
    const attempts = await live.db.query<{ activity_id: string }>(`SELECT DISTINCT activity_id FROM stage_attempts WHERE run_id = ? ORDER BY activity_id`, [b]);
    expect(attempts.map((x) => x.activity_id)).toEqual(expect.arrayContaining(['stage:fit:try-1:replica-0', 'stage:fit:try-1:replica-1']));
    expect(await slots()).toMatchObject({ capacity: 2, free: 2, holders: [], waiting: [] });
  });

  it('a holder whose replicas cannot all start gives its slots back, asks again, and then pauses saying why', async () => {
    // The ghost stays: the keeper keeps granting 3, but the live worker can start only 2 replicas.
    await ghost('ghost-c', 2, 10 * 60_000);
    await waitFor(async () => (await slots())?.capacity === 4 && true, 'capacity 4');
    const id = await startLive('gang-cannot-start', { replicas: 3, holdMs: 120_000, barrierTimeoutMs: 120_000 });
    // The ghost goes whatever happens here: the next test counts the live workers.
    onTestFinished(() => unghost('ghost-c'));
    const run = await waitLive(id, ['PAUSED', 'FAILED', 'COMPLETED']);
    expect(run.status).toBe('PAUSED');
    expect(run.stages[0]).toMatchObject({ status: 'FAILED', errorType: 'GANG_STALLED' });
    expect(run.stages[0].error).toMatch(/replica \d\/3 did not start within 6 s of its gang's grant/);
    expect(run.stages[0].error).toContain('gave its slots back 2 time(s)');
    expect(run.events.filter((e: any) => e.type === 'STAGE_REQUEUED')).toHaveLength(1);
    // Nothing held, nothing running: the started replicas were cancelled.
    expect(await slots()).toMatchObject({ holders: [], waiting: [] });
    const attempts = await live.db.query<{ activity_id: string; outcome: string }>(
      `SELECT activity_id, outcome FROM stage_attempts WHERE run_id = ? ORDER BY activity_id`,
      [id],
    );
    expect(attempts.filter((x) => x.outcome === 'running')).toEqual([]);
    expect(attempts.filter((x) => x.outcome === 'cancelled').length).toBeGreaterThanOrEqual(2);
    await live.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "test over") { id } }`, { id });
  });

  it('a stopped worker withdraws its report; a restarted one withdraws the reports of a dead worker recorded on its data folder, not a live one’s', async () => {
    const before = await waitFor(async () => {
      const v = await slots();
      return v?.workers.length === 1 ? v : undefined;
    }, 'one live worker');
    const old = before.workers[0]!.worker;
    // Records like the ones workers leave in <data dir>/workers: one of a process that is gone, one of a live one.
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const sleeper = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      const dir = path.join(live.dataDir, 'workers');
      await mkdir(dir, { recursive: true });
      const rec = (pid: number, worker: string) =>
        JSON.stringify({ pid, host: os.hostname(), reports: [{ queue: gpu(), worker }], startedAt: new Date().toISOString() });
      await writeFile(path.join(dir, 'dead.json'), rec(dead, 'ghost-killed'));
      await writeFile(path.join(dir, 'alive.json'), rec(sleeper.pid!, 'ghost-alive'));
      await ghost('ghost-killed', 2, 10 * 60_000);
      await ghost('ghost-alive', 1, 10 * 60_000);
      await waitFor(async () => (await slots())?.capacity === 5 && true, 'capacity 5');

      await live.stopWorkers();
      await live.startWorkers();
      const after = await waitFor(
        async () => {
          const v = await slots();
          return v && !v.workers.some((w) => w.worker === 'ghost-killed') ? v : undefined;
        },
        'the dead worker’s report to be withdrawn',
        15_000,
        100,
      );
      // Withdrawn, not expired (its lease had 10 minutes left); the live one's stays.
      expect(after.workers.map((w) => w.worker)).toContain('ghost-alive');
      expect(after.workers.map((w) => w.worker)).not.toContain(old);
      expect(await exists(path.join(dir, 'dead.json'))).toBe(false);
      expect(await exists(path.join(dir, 'alive.json'))).toBe(true);
      // The stopped worker said so itself (an unregister signal naming it), rather than lapsing.
      const history = await keeper().fetchHistory();
      const unregistered = (history.events ?? [])
        .filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'capstanUnregisterSlots')
        .map((e) => JSON.parse(Buffer.from(e.workflowExecutionSignaledEventAttributes!.input!.payloads![0]!.data!).toString()).worker);
      expect(unregistered).toEqual(expect.arrayContaining([old, 'ghost-killed']));
    } finally {
      sleeper.kill('SIGKILL');
      await unghost('ghost-alive');
    }
  });
});
