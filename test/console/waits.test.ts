// Waits that say why (issue 21): on a real stack (2 gpu slots), a run holds every slot; the runs
// behind it wait, and StageRun.wait (GraphQL over HTTP) gives the queue, the slots needed, the
// live capacity and free slots, each run's place in line and who holds the slots; runEvents
// streams STAGE_WAITING with those figures and STAGE_WAIT_ENDED once the slots are granted; the
// console (headless Chromium) draws a waiting bar whose label says why. A replica held back from
// a round barrier leaves the others waiting, and StageRun.wait names the replica they wait for.
// Also: the runs list's pipeline filter keeps what is typed across the list's periodic refresh.
// Screenshots go to test-results/console/ (not tracked).
import { mkdirSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { queueSlots } from '../../app/workers.js';
import { barrierWait, slotWait } from '../../engine/read-model.js';
import { registerSlotsSignal, slotKeeperId, unregisterSlotsSignal } from '../../workflows/gang.js';
import { defineStage, PLUGIN_API_VERSION, type StageContext } from '../../plugins/contract.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const SHOTS = path.resolve(import.meta.dirname, '../../test-results/console');
const POLL = { timeout: 60_000, interval: 250 };

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );
const pause = (ms: number, signal: AbortSignal) =>
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

/**
 * Replicas on the gpu queue that meet at a file barrier. `hold`: after meeting, they keep their
 * slots until the test writes `release` into the stage's shared folder. `lateReplica`: that
 * replica arrives only after `release`, while the others wait at the barrier and say whom for
 * (heartbeat details `barrier`, as multi-device fit sends them).
 */
const waiterStage = defineStage({
  name: 'test:waiter',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'replicas that hold their slots or arrive late at a barrier until released',
  paramsSchema: z.object({
    replicas: z.number().int().min(1).max(4).default(2),
    hold: z.boolean().default(false),
    lateReplica: z.number().int().min(-1).default(-1),
  }),
  consumes: [],
  produces: [],
  resource: 'gpu',
  retry: { maximumAttempts: 1 },
  dataParallel: {
    replicas: (p) => p.replicas,
    async reduce() {
      return { outputs: {}, metrics: { reduced: true } };
    },
  },
  async run(ctx: StageContext, p) {
    const i = ctx.replica?.index ?? 0;
    const n = ctx.replica?.count ?? 1;
    const dir = await ctx.checkpointDir({ shared: true });
    const released = () => exists(path.join(dir, 'release'));
    if (i === p.lateReplica)
      while (!(await released())) {
        ctx.heartbeat({ late: true });
        await pause(50, ctx.signal);
      }
    await writeFile(path.join(dir, `arrive-${i}`), '');
    const since = new Date().toISOString();
    for (;;) {
      const here = await Promise.all(Array.from({ length: n }, (_, k) => exists(path.join(dir, `arrive-${k}`))));
      if (here.every(Boolean)) break;
      ctx.heartbeat({ barrier: { round: 1, waitingFor: here.flatMap((h, k) => (h ? [] : [k])), since } });
      await pause(50, ctx.signal);
    }
    if (p.hold)
      while (!(await released())) {
        ctx.heartbeat({ holding: true });
        await pause(50, ctx.signal);
      }
    return { outputs: {}, metrics: { replica: i } };
  },
});

let stack: TestStack;
let browser: Browser;
const errors: string[] = [];
beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  stack = await startTestStack({ plugins: [waiterStage] });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

async function start(name: string, params: Record<string, unknown>): Promise<string> {
  const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
    s: { name, stages: [{ id: 'fit', plugin: 'test:waiter', params, timeouts: { heartbeat: '5s' } }] },
  });
  expect(r.errors).toBeUndefined();
  return r.data.startPipeline.id;
}
const release = (id: string) => writeFile(path.join(stack.artifacts.checkpointDir(id, 'fit'), 'release'), '');

const WAIT =
  'wait { reason since message queue slotsNeeded capacity free position queueLength heldBy { runId label slots since } round waitingReplicas waitingForReplicas notStartedReplicas }';
async function stage(id: string) {
  const r = await stack.gql(`query($id: ID!) { run(id: $id) { status events { type stageId message at } stages { id status ${WAIT} } } }`, { id });
  expect(r.errors).toBeUndefined();
  return { ...r.data.run.stages[0], run: r.data.run };
}
const waitStatus = (id: string, status: string) =>
  waitFor(async () => ((await stage(id)).run.status === status ? stage(id) : undefined), `run ${id} to be ${status}`, 90_000, 200);

/** Reads the run's runEvents stream (SSE over real HTTP) until an event matches; then stops reading. */
async function streamUntil(id: string, match: (e: any) => boolean): Promise<any[]> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(new Error(`no matching runEvents event for ${id} within 60 s`)), 60_000);
  const res = await fetch(`${stack.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${stack.adminToken}` },
    body: JSON.stringify({ query: `subscription($id: ID!) { runEvents(runId: $id) { seq type stageId message runStatus ${WAIT} } }`, variables: { id } }),
    signal: ac.signal,
  });
  const seen: any[] = [];
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return seen;
      buf += value;
      for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
        const data = buf
          .slice(0, i)
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join('');
        buf = buf.slice(i + 2);
        const e = data ? JSON.parse(data).data?.runEvents : undefined;
        if (!e) continue;
        seen.push(e);
        if (match(e)) return seen;
      }
    }
  } finally {
    clearTimeout(t);
    ac.abort();
  }
}

async function runPage(id: string): Promise<Page> {
  const page = await signedIn();
  await page.goto(`${stack.url}/console#/runs/${encodeURIComponent(id)}`);
  await page.getByTestId('run-status').waitFor();
  return page;
}
async function signedIn(): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(90_000);
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
  await page.goto(`${stack.url}/console`);
  await page.getByLabel('API token').fill(stack.adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('whoami').waitFor();
  return page;
}
const labels = (page: Page) =>
  page.getByTestId('wait-bar').evaluateAll((els) => els.map((e) => `${e.getAttribute('data-kind')}|${e.getAttribute('aria-label')}`));

/** Runs behind a holder of every slot: their waits over HTTP, the stream and the console, until the holder lets go. */
async function holdAndWait(holder: string) {
  const gpu = stack.taskQueues.gpu;
  await waitFor(async () => (await queueSlots(stack.client, gpu))?.holders.length === 1, 'the holder to take both slots', 30_000);
  const first = await start('wait-first', { replicas: 2 });
  await waitFor(async () => (await queueSlots(stack.client, gpu))?.waiting.length === 1, 'the first run to wait', 30_000);
  const second = await start('wait-second', { replicas: 1 });

  // StageRun.wait over HTTP: the figures come from the keeper now, not from when the wait began.
  const a = await waitFor(async () => ((await stage(first)).wait?.queueLength === 2 ? stage(first) : undefined), 'both runs in line', 30_000);
  const b = await stage(second);
  expect(a.status).toBe('RUNNING');
  expect(a.wait).toMatchObject({
    reason: 'SLOTS',
    queue: gpu,
    slotsNeeded: 2,
    capacity: 2,
    free: 0,
    position: 1,
    queueLength: 2,
    round: null,
    waitingReplicas: [],
    waitingForReplicas: [],
  });
  expect(a.wait.heldBy).toEqual([{ runId: holder, label: 'wait-holder/fit', slots: 2, since: expect.any(String) }]);
  expect(a.wait.message).toBe(`waits for 2 slot(s) on ${gpu}: 0 of 2 free, position 1 of 2 in line; held by wait-holder/fit (2)`);
  expect(b.wait).toMatchObject({ reason: 'SLOTS', slotsNeeded: 1, capacity: 2, free: 0, position: 2, queueLength: 2 });
  const since = Date.parse(a.wait.since);
  expect(since).toBeGreaterThan(Date.now() - 60_000);
  expect(since).toBeLessThanOrEqual(Date.now());
  // The run's own events record the start of the wait.
  expect(a.run.events.find((e: any) => e.type === 'STAGE_WAITING')).toMatchObject({ stageId: 'fit', message: `waits for 2 slot(s) on ${gpu}` });

  // runEvents: STAGE_WAITING carries the wait's figures.
  const streamed = await streamUntil(first, (e) => e.type === 'STAGE_WAITING');
  expect(streamed.at(-1)).toMatchObject({
    type: 'STAGE_WAITING',
    stageId: 'fit',
    runStatus: 'RUNNING',
    wait: { reason: 'SLOTS', queue: gpu, slotsNeeded: 2, capacity: 2, position: 1 },
  });

  // The console: a waiting bar on the stage's lane, labelled with why; the stage table says it too.
  const page = await runPage(first);
  await expect
    .poll(() => labels(page), POLL)
    .toEqual([
      expect.stringMatching(
        new RegExp(`^WAITING\\|fit: waiting .* — waits for 2 slot\\(s\\) on ${gpu}: 0 of 2 free, position 1 of 2 in line; held by wait-holder/fit \\(2\\)$`),
      ),
    ]);
  expect(await page.getByTestId('stage-wait').innerText()).toContain('position 1 of 2 in line');
  await page.screenshot({ path: path.join(SHOTS, 'waiting-for-slots.png'), fullPage: true });

  // The holder lets go: the first run gets its slots, then the second; each wait ends with an event.
  await release(holder);
  const done = await waitStatus(first, 'COMPLETED');
  expect(done.wait).toBeNull();
  const ended = done.run.events.filter((e: any) => e.type === 'STAGE_WAIT_ENDED');
  expect(ended).toEqual([
    expect.objectContaining({ stageId: 'fit', message: expect.stringMatching(new RegExp(`^got 2 slot\\(s\\) on ${gpu} after \\d+\\.\\d s$`)) }),
  ]);
  expect(Date.parse(ended[0].at)).toBeGreaterThanOrEqual(since);
  expect((await waitStatus(second, 'COMPLETED')).run.events.map((e: any) => e.type)).toEqual(expect.arrayContaining(['STAGE_WAITING', 'STAGE_WAIT_ENDED']));
  // The page (live) turns the bar into a past wait, from request to grant.
  await page.getByTestId('run-status').getByText('completed').waitFor({ timeout: 60_000 });
  await expect
    .poll(() => labels(page), POLL)
    .toEqual([expect.stringMatching(new RegExp(`^WAITING\\|fit: waited .* — waits for 2 slot\\(s\\) on ${gpu} — got 2 slot\\(s\\) on ${gpu} after`))]);
  await page.screenshot({ path: path.join(SHOTS, 'waited-for-slots.png'), fullPage: true });
  await page.close();
  expect(errors).toEqual([]);
}

describe('a stage waiting for slots', () => {
  it('says so in StageRun.wait, runEvents and the console timeline, with live capacity and position, and stops when granted', async () => {
    await waitFor(async () => (await queueSlots(stack.client, stack.taskQueues.gpu))?.capacity === 2, 'the gpu keeper to count 2 slots');
    const holder = await start('wait-holder', { replicas: 2, hold: true });
    try {
      await holdAndWait(holder);
    } finally {
      await release(holder); // also when an assertion failed: the next test needs the slots
    }
  });
});

describe('replicas waiting at a round barrier', () => {
  it('say which replica they wait for, in StageRun.wait, runEvents and the console', async () => {
    const id = await start('wait-barrier', { replicas: 2, lateReplica: 1 });
    const s = await waitFor(async () => ((await stage(id)).wait?.reason === 'BARRIER' ? stage(id) : undefined), 'replica 0 to wait at the barrier', 60_000);
    expect(s.wait).toMatchObject({
      reason: 'BARRIER',
      round: 1,
      waitingReplicas: [0],
      waitingForReplicas: [1],
      queue: null,
      heldBy: [],
      message: 'replica 0 waits at round 1 for replica 1',
    });
    const streamed = await streamUntil(id, (e) => e.type === 'STAGE_WAITING' && e.wait?.reason === 'BARRIER');
    expect(streamed.at(-1)).toMatchObject({ stageId: 'fit', message: 'replica 0 waits at round 1 for replica 1', wait: { waitingForReplicas: [1] } });
    const page = await runPage(id);
    await expect
      .poll(() => labels(page), POLL)
      .toContainEqual(expect.stringMatching(/^WAITING\|fit: replica 0 waiting .* — replica 0 waits at round 1 for replica 1$/));
    await page.screenshot({ path: path.join(SHOTS, 'waiting-at-barrier.png'), fullPage: true });
    await page.close();
    await release(id);
    const done = await waitStatus(id, 'COMPLETED');
    expect(done.wait).toBeNull();
    expect(errors).toEqual([]);
  });
});

describe('a gang granted slots no live worker has (the stall of issue 21)', () => {
  it('names the replica no worker has picked up, which the others wait for at the barrier', async () => {
    // A registration the keeper still counts, of a worker that is gone: 3 slots on paper, 2 real.
    const keeper = stack.client.workflow.getHandle(slotKeeperId(stack.taskQueues.gpu));
    await keeper.signal(registerSlotsSignal, { worker: 'ghost-worker', slots: 1, ttlMs: 120_000 });
    let id: string | undefined;
    try {
      await waitFor(async () => (await queueSlots(stack.client, stack.taskQueues.gpu))?.capacity === 3, 'the keeper to count the ghost');
      id = await start('wait-ghost', { replicas: 3 });
      const s = await waitFor(
        async () => ((await stage(id!)).wait?.reason === 'BARRIER' ? stage(id!) : undefined),
        'replicas 0 and 1 to wait for replica 2',
        60_000,
      );
      // Which replica is left without a worker slot is up to the task queue: any one of the three.
      const [left] = s.wait.waitingForReplicas;
      const started = [0, 1, 2].filter((r) => r !== left);
      expect(s.wait).toMatchObject({
        reason: 'BARRIER',
        waitingReplicas: started,
        waitingForReplicas: [left],
        notStartedReplicas: [left],
        message: `replicas ${started.join(', ')} wait at round 1 for replica ${left} (not started: no worker has picked up replica ${left})`,
      });
    } finally {
      await keeper.signal(unregisterSlotsSignal, { worker: 'ghost-worker' });
      if (id) await stack.gql('mutation($id: ID!) { cancelRun(runId: $id) { id } }', { id });
    }
    await waitStatus(id!, 'CANCELLED');
  });
});

describe('the runs list while it refreshes', () => {
  it('keeps a pipeline filter being typed (a refresh does not put the applied filter back)', async () => {
    const page = await signedIn();
    await page.goto(`${stack.url}/console#/runs`);
    await page.getByTestId('runs-table').waitFor();
    await page.getByLabel('Pipeline').fill('wait-first');
    // The list refreshes every few seconds: wait for the next answer and the render after it.
    await page.waitForResponse((r) => r.url().endsWith('/graphql') && (r.request().postData() ?? '').includes('runs('));
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0))));
    expect(await page.getByLabel('Pipeline').inputValue()).toBe('wait-first');
    await page.getByLabel('Pipeline').press('Enter');
    await expect.poll(() => page.getByTestId('runs-table').locator('tbody tr').count(), POLL).toBe(1);
    await page.close();
  });
});

describe('wait views (no server)', () => {
  const since = '2026-01-01T00:00:00.000Z';
  it('barrier: the latest round, who waits, whom for, and replicas no worker has picked up', () => {
    const beats = [
      { replica: 0, round: 3, waitingFor: [1], since: '2026-01-01T00:00:02.000Z' },
      { replica: 2, round: 3, waitingFor: [1], since },
      { replica: 1, round: 2, waitingFor: [0], since }, // an older round: stale
    ];
    expect(barrierWait(beats, [1])).toEqual({
      reason: 'BARRIER',
      since,
      round: 3,
      waitingReplicas: [0, 2],
      waitingForReplicas: [1],
      notStartedReplicas: [1],
      message: 'replicas 0, 2 wait at round 3 for replica 1 (not started: no worker has picked up replica 1)',
    });
    // Everyone named has arrived (a beat from just before the barrier opened): no wait.
    expect(
      barrierWait([
        { replica: 0, round: 1, waitingFor: [1], since },
        { replica: 1, round: 1, waitingFor: [0], since },
      ]),
    ).toBeUndefined();
  });

  it('slots: a keeper that does not answer leaves the figures unknown; a granted request is no longer in line', () => {
    const w = { reason: 'slots' as const, queue: 'q-gpu', slotsNeeded: 3, since, requestId: 'r1' };
    expect(slotWait(w, undefined)).toMatchObject({
      capacity: null,
      position: null,
      message: "waits for 3 slot(s) on q-gpu; the queue's slot keeper did not answer",
    });
    const keeper = {
      queue: 'q-gpu',
      capacity: 2,
      free: 2,
      workers: [],
      holders: [{ requestId: 'r1', workflowId: 'pipeline/a/1', count: 3, label: 'a/fit', since }],
      waiting: [],
    };
    expect(slotWait(w, keeper)).toMatchObject({ capacity: 2, free: 2, position: null, queueLength: 0, message: '3 slot(s) on q-gpu granted; starting' });
  });
});
