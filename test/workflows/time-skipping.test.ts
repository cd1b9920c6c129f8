// The pipeline workflow's long waits in seconds: the real workflow code (workflows/index.ts: the run
// and the slot keeper) on Temporal's time-skipping test server (dev/test-server.ts, from Maven
// Central), with stub stage activities. A 24 h pause timeout, a budget pause raised after 23 h, and
// a gang whose replicas cannot start (2 min each try) are each checked by the times the run's
// own events record, which are the test server's clock, not the wall's.
//
// A schedule's firing is covered from the workflow it starts on: the test server has no Schedules
// API (CreateSchedule fails), and the firing times are Temporal's, not Capstan's code; schedules
// firing on their own are tested on the dev server (test/engine/operations.test.ts).
import { randomBytes } from 'node:crypto';
import { ApplicationFailure, type WorkflowHandle, WorkflowFailedError } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMetricsSinks, workflowsPath } from '../../app/workers.js';
import { registerSlotsSignal, slotKeeperId, slotsQuery } from '../../workflows/gang.js';
import { decideUpdate, progressQuery } from '../../workflows/messages.js';
import { allSearchAttributes } from '../../workflows/search-attributes.js';
import type {
  Decision,
  ResolvedStage,
  RunEventType,
  RunPipelineInput,
  RunStageInput,
  RunState,
  ScheduledPipelineInput,
  StageOutcome,
} from '../../workflows/types.js';

const QUEUE = 'ts-cpu';
const HOUR = 3_600_000;

let env: TestWorkflowEnvironment;
let worker: Worker;
let running: Promise<void>;

/** Stub stages: `params.fail` fails for good; any other params succeed (after a retry with new params, too). */
const activities = {
  async runStage(input: RunStageInput): Promise<StageOutcome> {
    const fail = (input.stage.params as { fail?: string } | undefined)?.fail;
    if (fail) throw ApplicationFailure.create({ message: fail, type: 'PLUGIN_FAILED', nonRetryable: true, details: [{ attempt: 1 }] });
    return { attempt: 1, outputs: {}, metrics: { stub: true }, ...(input.budget ? { spent: { run: '0.50', stage: '0.50' } } : {}) };
  },
  async reduceStage(): Promise<StageOutcome> {
    return { attempt: 1, outputs: {}, metrics: { reduced: true } };
  },
  /** What a schedule's firing resolves: here a one-stage pipeline named by the stored spec. */
  async resolvePipeline(input: ScheduledPipelineInput): Promise<RunPipelineInput> {
    firings.push(input);
    return pipeline([stage('nightly-stage')], { pipeline: (input.spec as { name: string }).name });
  },
};
const firings: ScheduledPipelineInput[] = [];

function stage(id: string, o: Partial<ResolvedStage> = {}): ResolvedStage {
  return {
    id,
    plugin: 'test:stub',
    pluginVersion: '1.0.0',
    params: {},
    needs: [],
    inputs: {},
    produces: [],
    taskQueue: QUEUE,
    retry: { maximumAttempts: 1, initialIntervalMs: 100, backoffCoefficient: 2, maximumIntervalMs: 1000, nonRetryableErrorTypes: [] },
    startToCloseMs: 60_000,
    heartbeatMs: 30_000,
    replicas: 1,
    cache: false,
    ...o,
  };
}

function pipeline(stages: ResolvedStage[], extra: Partial<RunPipelineInput> = {}): RunPipelineInput {
  return { pipeline: 'time-skipping', spec: {}, stages, onFailure: { action: 'pause', timeoutMs: 24 * HOUR }, ...extra };
}

async function start(input: RunPipelineInput): Promise<WorkflowHandle> {
  return env.client.workflow.start('runPipelineWorkflow', { args: [input], taskQueue: QUEUE, workflowId: `pipeline/ts/${randomBytes(4).toString('hex')}` });
}

/** Queries until the run's state passes `ok` (queries do not move the test server's clock); 30 s of wall time at most. */
async function until(h: WorkflowHandle, ok: (s: RunState) => boolean): Promise<RunState> {
  const end = Date.now() + 30_000;
  for (;;) {
    const s = await h.query(progressQuery);
    if (ok(s)) return s;
    if (Date.now() > end)
      throw new Error(
        `run ${h.workflowId} never reached the state waited for; last: ${JSON.stringify({ status: s.status, stages: s.stages, events: s.events })}`,
      );
    await new Promise((r) => setImmediate(r)); // fixed-sleep-ok: yields to the worker between queries; no time is waited
  }
}

/** The run's state a failed workflow carries (PIPELINE_FAILED's details). */
async function failedState(h: WorkflowHandle): Promise<{ message: string; state: RunState }> {
  const err = await h.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as ApplicationFailure;
  expect(cause.type).toBe('PIPELINE_FAILED');
  return { message: cause.message, state: cause.details![0] as RunState };
}

/** Milliseconds of the test server's time between the first events of these types. */
function between(s: RunState, from: RunEventType, to: RunEventType): number {
  const at = (t: RunEventType) => Date.parse(s.events.find((e) => e.type === t)!.at);
  return at(to) - at(from);
}

beforeAll(async () => {
  env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: process.env.TEMPORAL_TEST_SERVER_PATH! } } });
  // The search attributes the workflow upserts, as the dev server has them.
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(allSearchAttributes.map((k) => [k.name, 2 /* KEYWORD */])),
  });
  worker = await Worker.create({ connection: env.nativeConnection, taskQueue: QUEUE, workflowsPath, activities, sinks: runMetricsSinks() });
  running = worker.run();
}, 120_000);

afterAll(async () => {
  worker?.shutdown();
  await running;
  await env?.teardown();
});

describe('the pipeline workflow on a time-skipping test server', () => {
  it('a pause with no decision fails the run after its 24 h timeout', { timeout: 60_000 }, async () => {
    const h = await start(pipeline([stage('boom', { params: { fail: 'no data' } })]));
    const { message, state } = await failedState(h);
    expect(message).toBe('run paused on stage boom and timed out waiting for a decision');
    expect(state.stages[0]).toMatchObject({ status: 'FAILED', error: 'no data', errorType: 'PLUGIN_FAILED' });
    // 24 h passed on the run's clock between the pause and the failure.
    const waited = between(state, 'RUN_PAUSED', 'RUN_FAILED');
    expect(waited).toBeGreaterThanOrEqual(24 * HOUR);
    expect(waited).toBeLessThan(24 * HOUR + 60_000);
  });

  it('a retry after 23 h of pause runs the stage again with its new params and completes', { timeout: 60_000 }, async () => {
    const h = await start(pipeline([stage('boom', { params: { fail: 'bad param' } }), stage('after', { needs: ['boom'] })]));
    await until(h, (s) => s.status === 'PAUSED');
    await env.sleep('23 hours'); // fixed-sleep-ok: the test server's clock skips ahead; no wall time passes
    expect((await h.query(progressQuery)).status).toBe('PAUSED');
    const retry: Decision = { action: 'retry', stageId: 'boom', params: { ok: true }, by: { name: 'ops', role: 'operator' } };
    await h.executeUpdate(decideUpdate, { args: [retry] });
    const state = (await h.result()) as RunState;
    expect(state.status).toBe('COMPLETED');
    expect(state.stages.map((s) => [s.id, s.status])).toEqual([
      ['boom', 'SUCCEEDED'],
      ['after', 'SUCCEEDED'],
    ]);
    expect(state.stages[0]!.paramsOverride).toEqual({ ok: true });
    expect(state.events.find((e) => e.type === 'RUN_RESUMED')!.message).toBe(
      'stage boom retried by ops (operator); stages that start from here on act as ops (operator)',
    );
    expect(between(state, 'RUN_PAUSED', 'RUN_RESUMED')).toBeGreaterThanOrEqual(23 * HOUR);
  });

  it('a budget pause: raised after 23 h the stage runs; never raised, the run fails after 24 h', { timeout: 60_000 }, async () => {
    const budgeted = (): Partial<RunPipelineInput> => ({
      budget: {
        currency: 'USD',
        max: '1.00',
        onExceed: 'pause',
        stages: {},
        priceSheet: { currency: 'USD', compute: { cpuHour: '0.10', gpuHour: '2.00' }, storage: { gbMonth: '0.02', retentionMonths: 1 } },
      },
      // Only the stage's expected cost is read by the workflow.
      estimate: { stages: [{ stageId: 'train', cost: { total: { expected: '2.00' } } }] } as unknown as RunPipelineInput['estimate'],
    });
    const raised = await start(pipeline([stage('train')], budgeted()));
    const never = await start(pipeline([stage('train')], budgeted()));
    for (const h of [raised, never]) {
      const paused = await until(h, (s) => s.status === 'PAUSED');
      expect(paused.stages[0]!.budgetPause).toBe("budget: stage train is estimated at 2.00 USD, more than the 1.00 USD left of the run's 1.00 USD");
    }
    await env.sleep('23 hours'); // fixed-sleep-ok: the test server's clock skips ahead; no wall time passes
    await raised.executeUpdate(decideUpdate, { args: [{ action: 'raise-budget', max: '3.00', by: 'finance' }] });
    const done = (await raised.result()) as RunState;
    expect(done.status).toBe('COMPLETED');
    expect(done.budget).toMatchObject({ max: '3.00', spent: '0.50', raises: [{ from: '1.00', to: '3.00', by: 'finance' }] });
    expect(between(done, 'RUN_PAUSED', 'BUDGET_RAISED')).toBeGreaterThanOrEqual(23 * HOUR);

    const { message, state } = await failedState(never);
    expect(message).toBe('run paused on stage train for its budget and timed out waiting for a decision');
    expect(state.stages[0]!.status).toBe('PENDING');
    expect(between(state, 'RUN_PAUSED', 'RUN_FAILED')).toBeGreaterThanOrEqual(24 * HOUR);
  });

  it('two stages starting together under one budget: the second waits while the first holds its estimate', { timeout: 60_000 }, async () => {
    const h = await start(
      pipeline([stage('a'), stage('b')], {
        budget: {
          currency: 'USD',
          max: '0.03',
          onExceed: 'pause',
          stages: {},
          priceSheet: { currency: 'USD', compute: { cpuHour: '0.10', gpuHour: '2.00' }, storage: { gbMonth: '0.02', retentionMonths: 1 } },
        },
        estimate: {
          stages: ['a', 'b'].map((stageId) => ({ stageId, cost: { total: { expected: '0.02' } } })),
        } as unknown as RunPipelineInput['estimate'],
      }),
    );
    // a ran (its stub reports 0.50 spent); b never started beside it, and after it looks again at 0.50 spent.
    const paused = await until(h, (s) => s.status === 'PAUSED' && s.stages[0]!.status === 'SUCCEEDED');
    const reasons = paused.events.filter((e) => e.type === 'RUN_PAUSED').map((e) => [e.stageId, e.message?.split(';')[0]]);
    expect(reasons[0]).toEqual([
      'b',
      "budget: stage b is estimated at 0.02 USD, more than the 0.01 USD left of the run's 0.03 USD (0.02 USD of it reserved by running stage a)",
    ]);
    expect(paused.stages[1]).toMatchObject({ status: 'PENDING', budgetPause: 'budget: the run has spent 0.50 USD of its 0.03 USD' });
    await h.executeUpdate(decideUpdate, { args: [{ action: 'abort', reason: 'over budget' }] });
    expect((await failedState(h)).message).toBe('aborted by operator: over budget');
  });

  it('a schedule firing (startScheduledPipelineWorkflow) resolves the stored spec then continues as the run under the same id', {
    timeout: 60_000,
  }, async () => {
    const workflowId = `pipeline/nightly/scheduled-${randomBytes(3).toString('hex')}`;
    const stored: ScheduledPipelineInput = { spec: { name: 'nightly' }, taskQueues: { cpu: QUEUE, gpu: QUEUE } };
    const h = await env.client.workflow.start('startScheduledPipelineWorkflow', { args: [stored], taskQueue: QUEUE, workflowId });
    const state = (await h.result()) as RunState; // follows the continue-as-new into the run
    expect(firings.at(-1)).toEqual(stored);
    expect(state).toMatchObject({ pipeline: 'nightly', status: 'COMPLETED', stages: [{ id: 'nightly-stage', status: 'SUCCEEDED' }] });
    const firing = await env.client.workflow.getHandle(workflowId, h.firstExecutionRunId).describe();
    expect(firing).toMatchObject({ type: 'startScheduledPipelineWorkflow', status: { name: 'CONTINUED_AS_NEW' } });
    expect(await env.client.workflow.getHandle(workflowId).describe()).toMatchObject({ type: 'runPipelineWorkflow', status: { name: 'COMPLETED' } });
  });

  it('a gang waits for slots as long as no worker has them (3 h here), and runs once a worker reports them', { timeout: 60_000 }, async () => {
    // The queue's keeper (the real slot keeper workflow) knows one worker, with no slots yet. The
    // replicas' activities run on the stub worker's queue once the keeper grants the slots.
    const keeper = await env.client.workflow.signalWithStart('slotKeeperWorkflow', {
      workflowId: slotKeeperId(QUEUE),
      taskQueue: QUEUE,
      args: [{ queue: QUEUE }],
      signal: registerSlotsSignal,
      signalArgs: [{ worker: 'gpu-box', slots: 0, ttlMs: 7 * 24 * HOUR }],
    });
    const h = await start(pipeline([stage('fit', { replicas: 2 })]));
    await until(h, (s) => s.stages[0]!.wait !== undefined);
    await env.sleep('3 hours'); // fixed-sleep-ok: the test server's clock skips ahead; no wall time passes
    const waiting = await h.query(progressQuery);
    expect(waiting.status).toBe('RUNNING');
    expect(waiting.stages[0]).toMatchObject({ status: 'RUNNING', waitingFor: `2 slot(s) on ${QUEUE}` });
    expect(await keeper.query(slotsQuery)).toMatchObject({ capacity: 0, waiting: [{ workflowId: h.workflowId, count: 2 }] });

    await keeper.signal(registerSlotsSignal, { worker: 'gpu-box', slots: 2, ttlMs: 7 * 24 * HOUR });
    const state = (await h.result()) as RunState;
    expect(state.status).toBe('COMPLETED');
    expect(state.stages[0]).toMatchObject({ status: 'SUCCEEDED', metrics: { reduced: true } });
    const ended = state.events.find((e) => e.type === 'STAGE_WAIT_ENDED')!;
    expect(ended.message).toMatch(new RegExp(`^got 2 slot\\(s\\) on ${QUEUE} after \\d+\\.\\d s$`));
    expect(between(state, 'STAGE_WAITING', 'STAGE_WAIT_ENDED')).toBeGreaterThanOrEqual(3 * HOUR);
    // The slots went back to the keeper when the stage ended. (Its worker's lease may have lapsed
    // meanwhile: waiting for the result lets the server skip to the keeper's next timer.)
    const after = await keeper.query(slotsQuery);
    expect(after.holders).toEqual([]);
    expect(after.free).toBe(after.capacity);
  });
});
