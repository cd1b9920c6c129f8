import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import proto from '@temporalio/proto';

const { temporal } = proto;
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const RUN = `id pipeline status resumedFrom pausedStages stages { id plugin status attempts outputs { kind uri sha256 } metrics error errorType reusedFrom } events { seq type stageId message }`;

let stack: TestStack;
beforeAll(async () => {
  // Schedules here fire every 2 s, under the production minimum (60 s).
  stack = await startTestStack({ plugins, env: { CAPSTAN_MIN_SCHEDULE_INTERVAL: '1s' } });
});
afterAll(async () => {
  await stack?.close();
});

async function start(spec: unknown): Promise<string> {
  const r = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, { spec });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.startPipeline.id;
}
async function getRun(id: string) {
  return (await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).data.run;
}
const waitStatus = (id: string, statuses: string[], ms = 60_000) =>
  waitFor(
    async () => {
      const r = await getRun(id);
      return statuses.includes(r?.status) ? r : undefined;
    },
    `run ${id} to reach ${statuses.join('/')}`,
    ms,
  );

/** Activity ids scheduled in a run's history. */
async function scheduledActivities(id: string): Promise<string[]> {
  const h = await stack.client.workflow.getHandle(id).fetchHistory();
  return (h.events ?? [])
    .filter((e) => e.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    .map((e) => e.activityTaskScheduledEventAttributes!.activityId!);
}

const failing = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  stages: [
    { id: 'write', plugin: 'test:write-note', params: { text: 'abc' } },
    { id: 'shout', plugin: 'test:shout', params: { alwaysFail: true }, retry: { maximumAttempts: 2, initialInterval: '100ms' } },
    { id: 'after', plugin: 'test:shout', params: {} },
  ],
  ...extra,
});

describe('operating runs', () => {
  it('pauses a stage that used up its retries, refuses invalid decisions, and completes after retryStage with fixed params', async () => {
    const id = await start(failing('pause-retry'));
    const paused = await waitStatus(id, ['PAUSED']);
    expect(paused.pausedStages).toEqual(['shout']);
    expect(paused.stages[1]).toMatchObject({ status: 'FAILED', attempts: 2 });
    // Visible to the Temporal UI as a search attribute.
    await waitFor(
      async () => (await stack.client.workflow.count(`CapstanPipeline = 'pause-retry' AND CapstanStatus = 'PAUSED'`)).count === 1,
      'PAUSED search attribute',
      30_000,
    );

    const wrongStage = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "write") { id } }`, { id });
    expect(wrongStage.errors?.[0]?.extensions.code).toBe('DECISION_REJECTED');
    expect(wrongStage.errors?.[0]?.message).toContain('not waiting for a decision');
    const badParams = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "shout", params: { suffix: "waytoolong" }) { id } }`, { id });
    expect(badParams.errors?.[0]?.extensions.code).toBe('PLUGIN_PARAMS_INVALID');
    expect(badParams.errors?.[0]?.message).toContain('params.suffix');
    const skipNeeded = await stack.gql(`mutation($id: ID!) { skipStage(runId: $id, stageId: "shout") { id } }`, { id });
    expect(skipNeeded.errors?.[0]?.message).toContain('after need its outputs');
    // The refused decisions changed nothing.
    expect((await getRun(id)).status).toBe('PAUSED');

    const ok = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "shout", params: { suffix: "!" }) { id } }`, { id });
    expect(ok.errors).toBeUndefined();
    const done = await waitStatus(id, ['COMPLETED']);
    expect(done.stages.map((s: any) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
    const note = await readFile(path.join(stack.artifacts.resolve(done.stages[2].outputs[0].uri), 'note.txt'), 'utf8');
    expect(note).toBe('ABC!');
    expect(done.events.map((e: any) => e.type)).toEqual(expect.arrayContaining(['RUN_PAUSED', 'RUN_RESUMED', 'RUN_COMPLETED']));
  });

  it('skips a stage nothing needs, and aborts with a reason', async () => {
    const skipId = await start({
      name: 'skip-me',
      stages: [
        { id: 'write', plugin: 'test:write-note' },
        { id: 'shout', plugin: 'test:shout', params: { badData: true } },
        { id: 'other', plugin: 'test:write-note', needs: ['shout'] },
      ],
    });
    await waitStatus(skipId, ['PAUSED']);
    const r = await stack.gql(`mutation($id: ID!) { skipStage(runId: $id, stageId: "shout") { id } }`, { id: skipId });
    expect(r.errors).toBeUndefined();
    const done = await waitStatus(skipId, ['COMPLETED']);
    expect(done.stages.map((s: any) => s.status)).toEqual(['SUCCEEDED', 'SKIPPED', 'SUCCEEDED']);

    const abortId = await start(failing('abort-me'));
    await waitStatus(abortId, ['PAUSED']);
    const noReason = await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: " ") { id } }`, { id: abortId });
    expect(noReason.errors?.[0]?.extensions.code).toBe('BAD_ARGUMENT');
    await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "bad data upstream") { id } }`, { id: abortId });
    const aborted = await waitStatus(abortId, ['FAILED']);
    expect(aborted.events.at(-1)).toMatchObject({ type: 'RUN_FAILED', message: expect.stringContaining('bad data upstream') });
    const late = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "shout") { id } }`, { id: abortId });
    expect(late.errors?.[0]?.extensions.code).toBe('DECISION_REJECTED');
  });

  it('fails a pause nobody answers once its timeout passes', async () => {
    const id = await start(failing('pause-timeout', { onFailure: { action: 'pause', timeout: '1s' } }));
    const failed = await waitStatus(id, ['FAILED']);
    expect(failed.events.at(-1).message).toContain('timed out waiting for a decision');
  });

  it('resumes a failed run: reuses completed stages, reruns the failed one and after, even with the original worker gone', async () => {
    const flag = path.join(stack.dataDir, `fixed-${Date.now()}`);
    const spec = {
      name: 'resume-me',
      onFailure: { action: 'fail' },
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: 'resume' } },
        { id: 'shout', plugin: 'test:shout', params: { requireFile: flag }, retry: { maximumAttempts: 1 } },
        { id: 'after', plugin: 'test:shout' },
      ],
    };
    const id = await start(spec);
    const failed = await waitStatus(id, ['FAILED']);
    expect(failed.stages[1].error).toContain('is missing');

    // The worker that ran it goes away; planning needs only Temporal's history.
    await stack.stopWorkers();
    const plan = await stack.gql(`mutation($id: ID!) { resumeRun(runId: $id, dryRun: true) { plan { startAt stages { id action reason } } run { id } } }`, {
      id,
    });
    expect(plan.errors).toBeUndefined();
    expect(plan.data.resumeRun.run).toBeNull();
    expect(plan.data.resumeRun.plan.startAt).toBe('shout');
    expect(plan.data.resumeRun.plan.stages.map((s: any) => [s.id, s.action])).toEqual([
      ['write', 'REUSE'],
      ['shout', 'RERUN'],
      ['after', 'RERUN'],
    ]);
    await stack.startWorkers();

    await writeFile(flag, 'fixed');
    const res = await stack.gql(`mutation($id: ID!) { resumeRun(runId: $id) { run { id resumedFrom } } }`, { id });
    const newId = res.data.resumeRun.run.id;
    expect(res.data.resumeRun.run.resumedFrom).toBe(id);
    const done = await waitStatus(newId, ['COMPLETED']);
    expect(done.resumedFrom).toBe(id);
    expect(done.stages.map((s: any) => [s.id, s.status])).toEqual([
      ['write', 'REUSED'],
      ['shout', 'SUCCEEDED'],
      ['after', 'SUCCEEDED'],
    ]);
    expect(done.stages[0].reusedFrom).toBe(id);
    // From Temporal's history: the reused stage's activity never ran in the new run.
    expect(await scheduledActivities(newId)).toEqual(['stage:shout', 'stage:after']);
    const note = await readFile(path.join(stack.artifacts.resolve(done.stages[2].outputs[0].uri), 'note.txt'), 'utf8');
    expect(note).toBe('RESUME');

    // An artifact that went missing is not reused, and the plan says why.
    await rm(stack.artifacts.resolve(failed.stages[0].outputs[0].uri), { recursive: true });
    const plan2 = await stack.gql(`mutation($id: ID!) { resumeRun(runId: $id, dryRun: true) { plan { stages { id action reason } } } }`, { id });
    expect(plan2.data.resumeRun.plan.stages[0]).toMatchObject({ id: 'write', action: 'RERUN', reason: expect.stringContaining('missing') });
  });

  it('reuses cached stage outputs when plugin version, params and inputs match', async () => {
    const spec = (text: string) => ({
      name: 'cached',
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text }, cache: true },
        { id: 'shout', plugin: 'test:shout' },
      ],
    });
    const first = await waitStatus(await start(spec('same')), ['COMPLETED']);
    expect(first.stages[0].metrics.cacheHit).toBeUndefined();
    const second = await waitStatus(await start(spec('same')), ['COMPLETED']);
    expect(second.stages[0].metrics).toMatchObject({ cacheHit: true, cachedFromRun: first.id });
    expect(second.stages[0].outputs[0].uri).toBe(first.stages[0].outputs[0].uri);
    expect(second.stages[1].metrics.cacheHit).toBeUndefined();
    const third = await waitStatus(await start(spec('different')), ['COMPLETED']);
    expect(third.stages[0].metrics.cacheHit).toBeUndefined();
  });

  it('cancels a running run: the stage stops, the run is CANCELLED, finished artifacts stay', async () => {
    const id = await start({
      name: 'cancel-me',
      stages: [
        { id: 'write', plugin: 'test:write-note' },
        { id: 'wait', plugin: 'test:wait', params: { ms: 120000 }, timeouts: { heartbeat: '5s' } },
      ],
    });
    const running = await waitFor(async () => {
      const r = await getRun(id);
      return r.stages[1].status === 'RUNNING' ? r : undefined;
    }, 'wait stage to run');
    const r = await stack.gql(`mutation($id: ID!) { cancelRun(runId: $id) { id } }`, { id });
    expect(r.errors).toBeUndefined();
    const closed = await waitStatus(id, ['CANCELLED'], 30_000);
    expect(closed.stages.map((s: any) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED']);
    expect((await stack.artifacts.verify(running.stages[0].outputs[0])).ok).toBe(true);
    // The activity saw the cancellation (WAIT_CANCELLATION_COMPLETED): its result was a cancellation.
    const h = await stack.client.workflow.getHandle(id).fetchHistory();
    expect(h.events?.some((e) => e.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED)).toBe(true);
    const again = await stack.gql(`mutation($id: ID!) { cancelRun(runId: $id) { id } }`, { id });
    expect(again.errors?.[0]?.extensions.code).toBe('RUN_CLOSED');
  });

  it('starts saved pipelines on a schedule and on events, with the event payload in params', async () => {
    const save = await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s, triggers: ["dataset.updated"]) { name triggers } }`, {
      s: { name: 'on-event', stages: [{ id: 'write', plugin: 'test:write-note', params: { text: '{{event.text}}' } }] },
    });
    expect(save.data.savePipeline).toEqual({ name: 'on-event', triggers: ['dataset.updated'] });
    const none = await stack.gql(`mutation { emitEvent(type: "model.retired", payload: {}) { id } }`);
    expect(none.data.emitEvent).toEqual([]);
    const fired = await stack.gql(`mutation { emitEvent(type: "dataset.updated", payload: { text: "fresh data" }) { id pipeline } }`);
    expect(fired.errors).toBeUndefined();
    expect(fired.data.emitEvent).toHaveLength(1);
    const done = await waitStatus(fired.data.emitEvent[0].id, ['COMPLETED']);
    expect(await readFile(path.join(stack.artifacts.resolve(done.stages[0].outputs[0].uri), 'note.txt'), 'utf8')).toBe('fresh data');
    const missing = await stack.gql(`mutation { emitEvent(type: "dataset.updated", payload: { other: 1 }) { id } }`);
    expect(missing.errors?.[0]?.extensions.code).toBe('EVENT_PAYLOAD_MISSING');

    // With an event id, a retried call (same id) starts nothing new: it answers with the run it started.
    const once = async () =>
      (await stack.gql(`mutation { emitEvent(type: "dataset.updated", payload: { text: "once" }, eventId: "msg-42") { id } }`)).data.emitEvent;
    const [first, retried, again] = [await once(), await once(), await once()];
    expect(first).toHaveLength(1);
    expect(retried).toEqual(first);
    expect(again).toEqual(first);
    await waitStatus(first[0].id, ['COMPLETED']);
    expect(await once()).toEqual(first); // also after it completed
    const byEvent = await stack.client.workflow.count(`WorkflowId = '${first[0].id}'`);
    expect(byEvent.count).toBe(1);

    await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }`, {
      s: { name: 'every-2s', stages: [{ id: 'write', plugin: 'test:write-note' }] },
    });
    const bad = await stack.gql(`mutation { schedulePipeline(name: "every-2s", every: "soon") { id } }`);
    expect(bad.errors?.[0]?.message).toContain('every must be a duration');
    const sched = await stack.gql(`mutation { schedulePipeline(name: "every-2s", every: "2s") { id pipeline every paused } }`);
    expect(sched.errors).toBeUndefined();
    const sid = sched.data.schedulePipeline.id;
    expect(sched.data.schedulePipeline).toMatchObject({ pipeline: 'every-2s', every: ['2s'], paused: false });
    try {
      await waitFor(
        async () => (await stack.client.workflow.count(`CapstanPipeline = 'every-2s' AND ExecutionStatus = 'Completed'`)).count >= 1,
        'a scheduled run to complete',
        60_000,
      );
      const paused = await stack.gql(`mutation($id: ID!) { pauseSchedule(id: $id) { paused } }`, { id: sid });
      expect(paused.data.pauseSchedule.paused).toBe(true);
      const listed = await stack.gql(`{ schedules(pipeline: "every-2s") { id recentRuns } }`);
      expect(listed.data.schedules[0].id).toBe(sid);
      expect(listed.data.schedules[0].recentRuns.length).toBeGreaterThanOrEqual(1);
      // The schedule stores the spec and resolves it at the firing: the run began by resolving it
      // (an activity), then continued as the pipeline, readable through the API like any run.
      const runId = listed.data.schedules[0].recentRuns[0] as string;
      const run = await waitFor(
        async () => {
          const r = (await stack.gql(`query($id: ID!) { run(id: $id) { status pipeline stages { id status } } }`, { id: runId })).data.run;
          return r?.status === 'COMPLETED' ? r : undefined;
        },
        'the scheduled run',
        60_000,
      );
      expect(run).toMatchObject({ pipeline: 'every-2s', stages: [{ id: 'write', status: 'SUCCEEDED' }] });
      const first = await stack.client.workflow.getHandle(runId).describe();
      expect(first.type).toBe('runPipelineWorkflow');
      const chain = await stack.client.workflow.count(`WorkflowId = '${runId}'`);
      expect(chain.count).toBe(2); // the firing that resolved the spec, then the pipeline it continued as
    } finally {
      const del = await stack.gql(`mutation($id: ID!) { deleteSchedule(id: $id) }`, { id: sid });
      expect(del.data.deleteSchedule).toBe(true);
    }
  });

  it('streams run events over SSE in order, with retries, ending when the run closes', async () => {
    const id = await start({
      name: 'streamed',
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { sleepMs: 300 } },
        { id: 'shout', plugin: 'test:shout', params: { failUntilAttempt: 1 }, retry: { maximumAttempts: 3, initialInterval: '1s' } },
      ],
    });
    const res = await fetch(`${stack.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${stack.adminToken}` },
      body: JSON.stringify({ query: `subscription($id: ID!) { runEvents(runId: $id) { seq type stageId attempt runStatus } }`, variables: { id } }),
    });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text(); // the stream ends when the run closes
    const events = text
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => JSON.parse(l.slice(6)))
      .filter((m) => m.data)
      .map((m) => m.data.runEvents);
    const seqs = events.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    const lifecycle = events.filter((e) => e.type !== 'STAGE_PROGRESS').map((e) => `${e.type}${e.stageId ? `:${e.stageId}` : ''}`);
    expect(lifecycle.filter((t) => !t.startsWith('STAGE_RETRIED'))).toEqual([
      'RUN_STARTED',
      'STAGE_STARTED:write',
      'STAGE_SUCCEEDED:write',
      'STAGE_STARTED:shout',
      'STAGE_SUCCEEDED:shout',
      'RUN_COMPLETED',
      'RUN_CLOSED',
    ]);
    expect(events.find((e) => e.type === 'STAGE_RETRIED')).toMatchObject({ stageId: 'shout', attempt: 2 });
    expect(lifecycle.indexOf('STAGE_RETRIED:shout')).toBeGreaterThan(lifecycle.indexOf('STAGE_STARTED:shout'));
  });
});
