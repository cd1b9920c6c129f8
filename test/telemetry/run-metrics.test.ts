// The worker's metrics from a real stack (Temporal dev server, workers with metrics, the API):
// a run that pauses is counted through the workflow's metrics sink (once, with its pipeline and
// the failure's code, and not again when another worker replays its history), stage attempts by outcome and their retries through the activity wrapper,
// finished runs by status; and the API reports the paused run from visibility while it waits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { splitStage } from '../fixtures/stages/data-parallel-stage.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';
import { sample } from './prom-text.js';

let stack: TestStack;
beforeAll(async () => {
  // The ops listener on any free loopback port: the workers' metrics are on.
  stack = await startTestStack({ plugins: [...plugins, splitStage, roiLedgerStage()], env: { CAPSTAN_OPS_LISTEN: '127.0.0.1:0' } });
});
afterAll(async () => {
  await stack?.close();
});

async function start(spec: unknown): Promise<string> {
  const r = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, { spec });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.startPipeline.id;
}
const status = async (id: string) => (await stack.gql(`query($id: ID!) { run(id: $id) { status } }`, { id })).data.run?.status as string | undefined;
const worker = async () => (await stack.workerTelemetry!.render()).body;
const api = async () => (await stack.apiMetrics!()).body;

describe('run metrics through the workflow sink and the activity wrapper', () => {
  it('counts a pause once by pipeline and code, attempts by outcome, and the run finishing; the API sees it paused', async () => {
    const pipeline = `sink-pause-${Date.now().toString(36)}`;
    const startedAt = Date.now();
    const id = await start({
      name: pipeline,
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: 'abc' } },
        { id: 'shout', plugin: 'test:shout', needs: ['write'], params: { badData: true } },
      ],
    });
    await waitFor(async () => (await status(id)) === 'PAUSED', `run ${id} to pause`, 60_000);
    const paused = await waitFor(
      async () => {
        const t = await worker();
        return sample(t, 'capstan_stage_pauses_total', { pipeline, code: 'BAD_DATA' }) === 1 ? t : undefined;
      },
      'the pause in the worker metrics',
      30_000,
    );
    expect(sample(paused, 'capstan_budget_pauses_total', { pipeline })).toBeUndefined();
    expect(sample(paused, 'capstan_stage_attempts_total', { plugin: 'test:write-note', outcome: 'succeeded' })).toBeGreaterThanOrEqual(1);
    expect(sample(paused, 'capstan_stage_attempts_total', { plugin: 'test:shout', outcome: 'failed' })).toBe(1);
    expect(sample(paused, 'capstan_stage_duration_seconds_count', { plugin: 'test:shout', outcome: 'failed' })).toBe(1);
    expect(sample(paused, 'capstan_worker_up', { roles: 'cpu,gpu,workflows' })).toBe(1);

    // The API, from visibility (its cache is 1 s here).
    const seen = await waitFor(
      async () => {
        const t = await api();
        return sample(t, 'capstan_runs', { pipeline, status: 'PAUSED' }) === 1 && sample(t, 'capstan_run_paused_seconds', { run_id: id }) !== undefined
          ? t
          : undefined;
      },
      'the paused run in the API metrics',
      30_000,
    );
    // Paused since a moment after the run started: more than nothing, less than the test has waited.
    const pausedFor = sample(seen, 'capstan_run_paused_seconds', { run_id: id, pipeline })!;
    expect(pausedFor).toBeGreaterThan(0);
    expect(pausedFor).toBeLessThan((Date.now() - startedAt) / 1000);
    expect(sample(seen, 'capstan_budget_paused_runs', { pipeline })).toBeUndefined();

    // New workers (the same metrics): the run is rebuilt from its history when the decision comes,
    // replaying its pause — which the sink does not count again.
    await stack.stopWorkers();
    await stack.startWorkers();
    const aborted = await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "metrics test") { id } }`, { id });
    expect(aborted.errors).toBeUndefined();
    await waitFor(async () => (await status(id)) === 'FAILED', `run ${id} to fail`, 60_000);
    const after = await waitFor(
      async () => {
        const t = await worker();
        return sample(t, 'capstan_runs_finished_total', { pipeline, status: 'FAILED' }) === 1 ? t : undefined;
      },
      'the aborted run counted as finished',
      30_000,
    );
    // Still one pause: not counted again when the new worker replayed the run's history.
    expect(sample(after, 'capstan_stage_pauses_total', { pipeline, code: 'BAD_DATA' })).toBe(1);
    await waitFor(
      async () => {
        const t = await api();
        return sample(t, 'capstan_runs', { pipeline, status: 'FAILED' }) === 1 && sample(t, 'capstan_runs', { pipeline, status: 'PAUSED' }) === undefined;
      },
      'the API to count the run as FAILED',
      30_000,
    );
  });

  it('counts a retried attempt, and a completed run', async () => {
    const pipeline = `sink-retry-${Date.now().toString(36)}`;
    const before = sample(await worker(), 'capstan_stage_retries_total', { plugin: 'test:shout' }) ?? 0;
    const id = await start({
      name: pipeline,
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: 'abc' } },
        { id: 'shout', plugin: 'test:shout', needs: ['write'], params: { failUntilAttempt: 1 } },
      ],
    });
    await waitFor(async () => (await status(id)) === 'COMPLETED', `run ${id} to complete`, 60_000);
    const t = await waitFor(
      async () => {
        const x = await worker();
        return sample(x, 'capstan_runs_finished_total', { pipeline, status: 'COMPLETED' }) === 1 ? x : undefined;
      },
      'the completed run counted',
      30_000,
    );
    expect(sample(t, 'capstan_stage_retries_total', { plugin: 'test:shout' })).toBe(before + 1);
    expect(sample(t, 'capstan_stage_pauses_total', { pipeline, code: 'BAD_DATA' })).toBeUndefined();
  });

  it('counts a budget pause (code BUDGET_EXHAUSTED), and the API reports the run paused for its budget', async () => {
    const pipeline = `sink-budget-${Date.now().toString(36)}`;
    // 1 CPU-second = 0.01 USD: the stage's estimate (2 CPU-seconds, 0.02 USD) does not fit the run's 0.01 USD.
    const priceSheet = { compute: { cpuHour: '36.00', gpuHour: '360.00' }, storage: { gbMonth: '0.02', retentionMonths: 1 } };
    const id = await start({
      name: pipeline,
      budget: { max: '0.01' },
      stages: [
        { id: 'burn', plugin: 'test:burn', params: { cpuMs: 10, estimateCpuSeconds: 2 } },
        { id: 'ledger', plugin: 'core:roi-ledger', needs: ['burn'], params: { priceSheet, revenue: { kind: 'contract', value: '5.00' } } },
      ],
    });
    await waitFor(async () => (await status(id)) === 'PAUSED', `run ${id} to pause on its budget`, 60_000);
    const t = await waitFor(
      async () => {
        const x = await worker();
        return sample(x, 'capstan_budget_pauses_total', { pipeline }) === 1 ? x : undefined;
      },
      'the budget pause in the worker metrics',
      30_000,
    );
    expect(sample(t, 'capstan_stage_pauses_total', { pipeline, code: 'BUDGET_EXHAUSTED' })).toBe(1);
    await waitFor(async () => sample(await api(), 'capstan_budget_paused_runs', { pipeline }) === 1, 'the API to report the budget-paused run', 30_000);
    const aborted = await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "metrics test") { id } }`, { id });
    expect(aborted.errors).toBeUndefined();
    await waitFor(async () => (await status(id)) === 'FAILED', `run ${id} to fail`, 60_000);
  });

  it("observes a gang's wait for its slots on its queue, and each replica's and the reduce's attempt", async () => {
    const queue = stack.taskQueues.gpu;
    const first = await worker();
    const before = sample(first, 'capstan_slot_wait_seconds_count', { queue }) ?? 0;
    const sumBefore = sample(first, 'capstan_slot_wait_seconds_sum', { queue }) ?? 0;
    const id = await start({ name: `sink-gang-${Date.now().toString(36)}`, stages: [{ id: 'split', plugin: 'test:split', params: { replicas: 2 } }] });
    await waitFor(async () => (await status(id)) === 'COMPLETED', `run ${id} to complete`, 60_000);
    const t = await waitFor(
      async () => {
        const x = await worker();
        return (sample(x, 'capstan_slot_wait_seconds_count', { queue }) ?? 0) === before + 1 ? x : undefined;
      },
      'the slot wait in the worker metrics',
      30_000,
    );
    // The wait observed is the one the run recorded (STAGE_WAIT_ENDED: "granted after 0.3 s", to a tenth).
    const events = (await stack.gql(`query($id: ID!) { run(id: $id) { events { type message } } }`, { id })).data.run.events as {
      type: string;
      message: string;
    }[];
    const ended = events.filter((e) => e.type === 'STAGE_WAIT_ENDED');
    expect(ended).toHaveLength(1);
    const recorded = Number(/after ([\d.]+) s/.exec(ended[0]!.message)?.[1]);
    expect(Math.abs(sample(t, 'capstan_slot_wait_seconds_sum', { queue })! - sumBefore - recorded)).toBeLessThanOrEqual(0.051);
    expect(sample(t, 'capstan_stage_duration_seconds_count', { plugin: 'test:split', outcome: 'succeeded' })).toBe(3);
  });
});
