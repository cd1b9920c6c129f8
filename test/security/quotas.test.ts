import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../../auth/tokens.js';
import { SPEC_LIMITS } from '../../engine/spec.js';
import { StartedByKey } from '../../workflows/search-attributes.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

// Quotas per principal (issue 20): concurrent runs and schedules answer 429 with Retry-After and
// start nothing; schedules fire no closer than the minimum interval and stop with their creator's
// token; params are bounded on every path. Small limits so each breach is a few requests away.
const MAX_RUNS = 2;
const MIN_INTERVAL = '30s';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({
    plugins: [...plugins, dataPrepStage(), pretrainStage()],
    env: { CAPSTAN_MAX_CONCURRENT_RUNS: String(MAX_RUNS), CAPSTAN_MAX_SCHEDULES: '1', CAPSTAN_MIN_SCHEDULE_INTERVAL: MIN_INTERVAL },
  });
});
afterAll(async () => {
  await stack?.close();
});

/** A token with its public id (the part after `cap_`). */
async function token(role: 'operator' | 'admin', name: string): Promise<{ token: string; id: string }> {
  const t = await stack.token(role, name);
  return { token: t, id: t.split('_')[1]! };
}

/** GraphQL over real HTTP, keeping the status and headers. */
async function post(query: string, variables: Record<string, unknown>, tok: string) {
  const res = await fetch(`${stack.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tok}` },
    body: JSON.stringify({ query, variables }),
  });
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    body: (await res.json()) as { data?: any; errors?: { message: string; extensions?: any }[] },
  };
}

const START = 'mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }';
/** A run that stays open (its stage waits a minute) until cancelled; a short heartbeat timeout lets a cancel reach it at once. */
const waiting = (name: string) => ({ name, stages: [{ id: 'wait', plugin: 'test:wait', params: { ms: 60_000 }, timeouts: { heartbeat: '2s' } }] });

/** Every run of a pipeline Temporal knows, by status. */
async function runsOf(pipeline: string): Promise<{ id: string; status: string }[]> {
  const r = await stack.gql(`query($p: String!) { runs(pipeline: $p, first: 100) { edges { node { id status } } } }`, { p: pipeline });
  return r.data.runs.edges.map((e: { node: { id: string; status: string } }) => e.node);
}

async function cancelAll(ids: string[]): Promise<void> {
  for (const id of ids) await stack.gql(`mutation($id: ID!) { cancelRun(runId: $id) { id } }`, { id }).catch(() => undefined);
}

describe('quotas', () => {
  it('refuses a run past the concurrent-run quota with 429 and Retry-After, and starts nothing', async () => {
    const op = await token('operator', 'quota-runs');
    const started: string[] = [];
    try {
      // One run by an event (with an event id), the others by startPipeline.
      await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s, triggers: ["quota.evt"]) { name } }`, { s: waiting('quota-runs') });
      const EMIT = 'mutation($e: String) { emitEvent(type: "quota.evt", eventId: $e) { id } }';
      const byEvent = await post(EMIT, { e: 'e1' }, op.token);
      expect(byEvent.body.errors).toBeUndefined();
      started.push(byEvent.body.data.emitEvent[0].id);
      for (let i = 1; i < MAX_RUNS; i++) {
        const r = await post(START, { s: waiting('quota-runs') }, op.token);
        expect(r.body.errors).toBeUndefined();
        started.push(r.body.data.startPipeline.id);
      }
      const over = await post(START, { s: waiting('quota-runs') }, op.token);
      expect(over.status).toBe(429);
      expect(Number(over.retryAfter)).toBeGreaterThan(0);
      expect(over.body.errors?.[0]?.extensions?.code).toBe('QUOTA_EXCEEDED');
      expect(over.body.errors?.[0]?.message).toContain(`at most ${MAX_RUNS} at once (CAPSTAN_MAX_CONCURRENT_RUNS)`);
      expect(over.body.errors?.[0]?.extensions?.http).toBeUndefined(); // yoga's transport hint stays out of the body
      // The same through a saved pipeline's event and a text spec: refused, nothing started.
      const text = await post(
        'mutation($t: String!) { startPipelineFromText(text: $t) { id } }',
        { t: 'name: quota-runs\nstages: [{ id: w, plugin: test:write-note }]' },
        op.token,
      );
      expect(text.status).toBe(429);
      expect((await post(EMIT, { e: 'e2' }, op.token)).status).toBe(429);
      // A retried event (same id) still finds the run it started: idempotency is not a new start.
      const again = await post(EMIT, { e: 'e1' }, op.token);
      expect(again.status).toBe(200);
      expect(again.body.data.emitEvent.map((r: { id: string }) => r.id)).toEqual([started[0]]);
      await waitFor(async () => (await runsOf('quota-runs')).length === MAX_RUNS, 'the runs to be listed', 30_000);
      expect((await runsOf('quota-runs')).map((r) => r.id).sort()).toEqual([...started].sort());

      // Another principal is not bound by this one's runs.
      const other = await token('operator', 'quota-other');
      const theirs = await post(START, { s: waiting('quota-other') }, other.token);
      expect(theirs.status).toBe(200);
      started.push(theirs.body.data.startPipeline.id);

      // A closed run frees its place.
      await cancelAll([started[0]!]);
      let last: unknown;
      await waitFor(
        async () => {
          const r = await post(START, { s: waiting('quota-runs') }, op.token);
          last = r.body;
          return r.body.data?.startPipeline?.id as string | undefined;
        },
        'a start after a cancel',
        30_000,
      )
        .then((id) => started.push(id))
        .catch((e: Error) => Promise.reject(new Error(`${e.message}; last answer ${JSON.stringify(last)}; runs ${JSON.stringify(started)}`)));
    } finally {
      await cancelAll(started);
    }
  });

  it('holds under a burst: parallel starts by one token never pass the quota', async () => {
    const op = await token('operator', 'quota-burst');
    const results = await Promise.all(Array.from({ length: 10 }, () => post(START, { s: waiting('quota-burst') }, op.token)));
    const ok = results.filter((r) => r.status === 200).map((r) => r.body.data.startPipeline.id as string);
    try {
      expect(ok).toHaveLength(MAX_RUNS);
      expect(results.filter((r) => r.status === 429)).toHaveLength(10 - MAX_RUNS);
      await waitFor(async () => (await runsOf('quota-burst')).length >= MAX_RUNS, 'the runs to be listed', 30_000);
      expect(await runsOf('quota-burst')).toHaveLength(MAX_RUNS);
    } finally {
      await cancelAll(ok);
    }
  });

  it('refuses a schedule past the per-token schedule quota with 429', async () => {
    const op = await token('operator', 'quota-sched');
    await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }`, {
      s: { name: 'quota-sched', stages: [{ id: 'w', plugin: 'test:write-note' }] },
    });
    const first = await post('mutation { schedulePipeline(name: "quota-sched", every: "1h") { id } }', {}, op.token);
    expect(first.body.errors).toBeUndefined();
    try {
      const second = await post('mutation { schedulePipeline(name: "quota-sched", every: "2h") { id } }', {}, op.token);
      expect(second.status).toBe(429);
      expect(second.retryAfter).not.toBeNull();
      expect(second.body.errors?.[0]?.extensions?.code).toBe('QUOTA_EXCEEDED');
      expect(second.body.errors?.[0]?.message).toContain('at most 1 (CAPSTAN_MAX_SCHEDULES)');
      const listed = await stack.gql(`{ schedules(pipeline: "quota-sched") { id } }`);
      expect(listed.data.schedules.map((s: { id: string }) => s.id)).toEqual([first.body.data.schedulePipeline.id]);
    } finally {
      await stack.gql(`mutation($id: ID!) { deleteSchedule(id: $id) }`, { id: first.body.data.schedulePipeline.id });
    }
  });

  it('refuses schedules that fire more often than the minimum interval, by interval or by cron', async () => {
    const admin = await token('admin', 'quota-interval');
    await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }`, {
      s: { name: 'quota-interval', stages: [{ id: 'w', plugin: 'test:write-note' }] },
    });
    const every = await post('mutation { schedulePipeline(name: "quota-interval", every: "1s") { id } }', {}, admin.token);
    expect(every.body.errors?.[0]?.extensions?.code).toBe('BAD_ARGUMENT');
    expect(every.body.errors?.[0]?.message).toContain(`every must be a duration of at least ${MIN_INTERVAL} (CAPSTAN_MIN_SCHEDULE_INTERVAL)`);
    // Cron: Temporal's own syntax, read by the server — a seconds field, @every, a minute list.
    for (const cron of ['* * * * * * *', '@every 5s', '0,10 * * * * * *']) {
      const r = await post('mutation($c: String!) { schedulePipeline(name: "quota-interval", cron: $c) { id } }', { c: cron }, admin.token);
      expect(r.body.errors?.[0]?.extensions?.code, cron).toBe('BAD_ARGUMENT');
      expect(r.body.errors?.[0]?.message, cron).toMatch(new RegExp(`fires \\d+s apart; schedules fire at least ${MIN_INTERVAL} apart`));
    }
    // None of them was left behind, paused or not.
    expect((await stack.gql(`{ schedules(pipeline: "quota-interval") { id } }`)).data.schedules).toEqual([]);
    const ok = await post('mutation { schedulePipeline(name: "quota-interval", cron: "*/5 * * * *") { id paused } }', {}, admin.token);
    expect(ok.body.errors).toBeUndefined();
    expect(ok.body.data.schedulePipeline.paused).toBe(false);
    await stack.gql(`mutation($id: ID!) { deleteSchedule(id: $id) }`, { id: ok.body.data.schedulePipeline.id });
  });

  it("stops a schedule firing once its creator's token is revoked", async () => {
    const op = await token('operator', 'quota-revoked');
    await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }`, {
      s: { name: 'quota-revoked', stages: [{ id: 'w', plugin: 'test:write-note' }] },
    });
    const created = await post('mutation { schedulePipeline(name: "quota-revoked", every: "1h") { id } }', {}, op.token);
    expect(created.body.errors).toBeUndefined();
    const sid = created.body.data.schedulePipeline.id as string;
    try {
      const handle = stack.client.schedule.getHandle(sid);
      // While the token is active, a firing runs the pipeline.
      // While the token is active, a firing runs the pipeline.
      const firings = async (n: number) =>
        waitFor(
          async () => {
            const acts = (await handle.describe()).info.recentActions;
            return acts.length >= n ? acts.map((a) => a.action.workflow) : undefined;
          },
          `firing ${n}`,
          60_000,
        );
      await handle.trigger();
      const [first] = await firings(1);
      await stack.client.workflow.getHandle(first!.workflowId).result(); // the pipeline it continued as completed
      expect((await stack.client.workflow.getHandle(first!.workflowId).describe()).type).toBe('runPipelineWorkflow');

      const revoked = await stack.gql(`mutation($id: ID!) { revokeToken(id: $id) { revokedAt } }`, { id: op.id });
      expect(revoked.data.revokeToken.revokedAt).toBeTruthy();
      await handle.trigger();
      const second = (await firings(2))[1]!;
      // The firing fails with the reason before any stage: it never continues as the pipeline.
      const err = await stack.client.workflow
        .getHandle(second.workflowId, second.firstExecutionRunId)
        .result()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(WorkflowFailedError);
      const cause = (err as WorkflowFailedError).cause?.cause as { type?: string; message?: string } | undefined;
      expect(cause?.type).toBe('SCHEDULE_CREATOR_INACTIVE');
      expect(cause?.message).toContain('is revoked or expired, so it starts no run');
      const desc = await stack.client.workflow.getHandle(second.workflowId).describe();
      expect(desc.type).toBe('startScheduledPipelineWorkflow');
      expect(desc.status.name).toBe('FAILED');
      // No pipeline run of it: the only runPipelineWorkflow of this pipeline is the first firing's.
      const pipelines = await stack.client.workflow.count(`CapstanPipeline = 'quota-revoked' AND WorkflowType = 'runPipelineWorkflow'`);
      expect(pipelines.count).toBe(1);
    } finally {
      await stack.gql(`mutation($id: ID!) { deleteSchedule(id: $id) }`, { id: sid });
    }
  });

  it('counts a token as inactive once revoked or past its expiry (what a firing and a trigger check)', async () => {
    const soon = new Date(Date.now() + 60_000);
    const { info } = await stack.runtime.tokens.create({ name: 'quota-expiring', role: 'operator', expiresAt: soon });
    expect(await stack.runtime.tokens.isActive(info.id)).toBe(true);
    expect(await new TokenStore(stack.db, () => new Date(soon.getTime() + 1)).isActive(info.id)).toBe(false);
    expect(await stack.runtime.tokens.isActive('ffffffffffff')).toBe(false);
    await stack.runtime.tokens.revoke(info.id);
    expect(await stack.runtime.tokens.isActive(info.id)).toBe(false);
  });

  it("lets an admin run a schedule as a named service principal, which outlives the admin's own token", async () => {
    const admin = await token('admin', 'quota-person');
    const svc = await token('operator', 'svc-nightly');
    const op = await token('operator', 'quota-runas-op');
    await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }`, {
      s: { name: 'quota-runas', stages: [{ id: 'w', plugin: 'test:write-note' }] },
    });
    const SCHED = 'mutation($r: ID) { schedulePipeline(name: "quota-runas", every: "1h", runAs: $r) { id } }';
    expect((await post(SCHED, { r: svc.id }, op.token)).body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await post(SCHED, { r: 'ffffffffffff' }, admin.token)).body.errors?.[0]?.extensions?.code).toBe('BAD_ARGUMENT');
    const created = await post(SCHED, { r: svc.id }, admin.token);
    expect(created.body.errors).toBeUndefined();
    const sid = created.body.data.schedulePipeline.id as string;
    try {
      await stack.gql(`mutation($id: ID!) { revokeToken(id: $id) { id } }`, { id: admin.id });
      const handle = stack.client.schedule.getHandle(sid);
      await handle.trigger();
      const fired = await waitFor(async () => (await handle.describe()).info.recentActions[0]?.action.workflow, 'the firing', 60_000);
      await stack.client.workflow.getHandle(fired.workflowId).result();
      const run = await stack.client.workflow.getHandle(fired.workflowId).describe();
      expect(run.type).toBe('runPipelineWorkflow');
      expect(run.typedSearchAttributes.get(StartedByKey)).toBe(svc.id);
    } finally {
      await stack.gql(`mutation($id: ID!) { deleteSchedule(id: $id) }`, { id: sid });
    }
  });

  it("stops a saved pipeline's trigger firing once the token that saved it is revoked", async () => {
    const op = await token('operator', 'quota-saver');
    const saved = await post(
      'mutation($s: PipelineSpecInput!) { savePipeline(spec: $s, triggers: ["quota.saved"]) { name } }',
      { s: { name: 'quota-trigger', stages: [{ id: 'w', plugin: 'test:write-note' }] } },
      op.token,
    );
    expect(saved.body.errors).toBeUndefined();
    // While its saver's token is active, an event starts it (here emitted by an admin).
    const fired = await stack.gql(`mutation { emitEvent(type: "quota.saved") { id } }`);
    expect(fired.data.emitEvent).toHaveLength(1);
    await stack.gql(`mutation($id: ID!) { revokeToken(id: $id) { id } }`, { id: op.id });
    const after = await stack.gql(`mutation { emitEvent(type: "quota.saved") { id } }`);
    expect(after.errors).toBeUndefined();
    expect(after.data.emitEvent).toEqual([]);
    await waitFor(async () => (await runsOf('quota-trigger')).length >= 1, 'the first run to be listed', 30_000);
    expect((await runsOf('quota-trigger')).map((r) => r.id)).toEqual([fired.data.emitEvent[0].id]);
    // Saved again by an active token, the trigger fires again.
    await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s, triggers: ["quota.saved"]) { name } }`, {
      s: { name: 'quota-trigger', stages: [{ id: 'w', plugin: 'test:write-note' }] },
    });
    expect((await stack.gql(`mutation { emitEvent(type: "quota.saved") { id } }`)).data.emitEvent).toHaveLength(1);
  });

  it('bounds params on every path: retryStage params and event payloads over the limit are refused', async () => {
    const big = 'x'.repeat(SPEC_LIMITS.paramsBytes);
    const op = await token('operator', 'quota-params'); // its own quota: other tests' runs may still be closing
    const start = await stack.gql(
      START,
      {
        s: {
          name: 'quota-params',
          stages: [
            { id: 'w', plugin: 'test:write-note' },
            { id: 's', plugin: 'test:shout', params: { alwaysFail: true }, retry: { maximumAttempts: 1 } },
          ],
        },
      },
      op.token,
    );
    const id = start.data.startPipeline.id as string;
    try {
      await waitFor(
        async () => (await stack.gql(`query($id: ID!) { run(id: $id) { status } }`, { id })).data.run?.status === 'PAUSED',
        'the run to pause',
        60_000,
      );
      const retry = await stack.gql(`mutation($id: ID!, $p: JSON) { retryStage(runId: $id, stageId: "s", params: $p) { status } }`, {
        id,
        p: { padding: big },
      });
      expect(retry.errors?.[0]?.extensions?.code).toBe('BAD_ARGUMENT');
      expect(retry.errors?.[0]?.message).toContain('params must be at most 64 KiB of JSON');
      expect((await stack.gql(`query($id: ID!) { run(id: $id) { status stages { id attempts } } }`, { id })).data.run).toMatchObject({
        status: 'PAUSED',
        stages: [{ id: 'w' }, { id: 's', attempts: 1 }],
      });

      await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s, triggers: ["quota.big"]) { name } }`, {
        s: { name: 'quota-event', stages: [{ id: 'w', plugin: 'test:write-note', params: { text: '{{event.text}}' } }] },
      });
      const event = await stack.gql(`mutation($p: JSON) { emitEvent(type: "quota.big", payload: $p) { id } }`, { p: { text: big } });
      expect(event.errors?.[0]?.extensions?.code).toBe('BAD_ARGUMENT');
      expect(event.errors?.[0]?.message).toContain('payload must be at most 64 KiB of JSON');
      expect(await runsOf('quota-event')).toEqual([]);
    } finally {
      await cancelAll([id]);
    }
  });

  it('refuses a core:pretrain model over the parameter ceiling before anything starts (validatePipeline, startPipeline)', async () => {
    const op = await token('operator', 'quota-ceiling');
    // 784-8192-8192-10: 73,629,706 parameters, over the default 50,000,000.
    const spec = {
      name: 'quota-ceiling',
      stages: [
        { id: 'data', plugin: 'core:data-prep', params: { limit: 100 } },
        { id: 'train', plugin: 'core:pretrain', params: { model: { hiddenUnits: [8192, 8192] }, epochs: 1 } },
      ],
    };
    const checked = await post('query($s: PipelineSpecInput!) { validatePipeline(spec: $s) { valid issues { path message code } } }', { s: spec }, op.token);
    expect(checked.body.data.validatePipeline.valid).toBe(false);
    expect(checked.body.data.validatePipeline.issues).toEqual([
      {
        path: 'stages[1].params.model',
        code: 'PLUGIN_PARAMS_INVALID',
        message:
          "the model has 73,629,706 trainable parameters for 28×28 inputs and 10 classes; this host's ceiling is 50,000,000 (CAPSTAN_MAX_MODEL_PARAMETERS)",
      },
    ]);
    const started = await post(START, { s: spec }, op.token);
    expect(started.body.errors?.[0]?.extensions?.code).toBe('SPEC_INVALID');
    expect(started.body.errors?.[0]?.message).toContain('stages[1].params.model: the model has 73,629,706 trainable parameters');
    expect(await runsOf('quota-ceiling')).toEqual([]);
  });
});
