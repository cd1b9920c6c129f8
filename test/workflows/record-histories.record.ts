// Records a new set of histories on a real stack: `npm run record-histories` (not part of npm test).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { splitStage } from '../fixtures/stages/data-parallel-stage.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';
import { RECORD_DIR, SCENARIOS, type Recorded } from './histories.js';

describe('recording histories (npm run record-histories)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ plugins: [...plugins, splitStage] });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('runs every scenario on a real stack and writes its history', { timeout: 300_000 }, async () => {
    const start = async (spec: unknown) =>
      (await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec })).data.startPipeline.id as string;
    const status = async (id: string) => (await stack.gql(`query($id: ID!) { run(id: $id) { status } }`, { id })).data.run.status as string;
    const until = (id: string, s: string) => waitFor(async () => (await status(id)) === s, `${id} ${s}`, 120_000);
    const closed = async (id: string) => {
      await waitFor(async () => !['RUNNING', 'PAUSED'].includes(await status(id)), `${id} closed`, 120_000);
      return id;
    };
    const write = { id: 'w', plugin: 'test:write-note', params: { text: 'replay' } };
    const fast = { maximumAttempts: 1 };
    const ids: Record<(typeof SCENARIOS)[number], string> = {} as never;

    ids.completed = await closed(
      await start({ name: 'replay-completed', stages: [write, { id: 's', plugin: 'test:shout', params: { failUntilAttempt: 1 } }] }),
    );

    const retried = await start({ name: 'replay-retried', stages: [write, { id: 's', plugin: 'test:shout', params: { alwaysFail: true }, retry: fast }] });
    await until(retried, 'PAUSED');
    await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "s", params: { suffix: "!" }) { id } }`, { id: retried });
    ids['paused-then-retried'] = await closed(retried);

    const skipped = await start({ name: 'replay-skipped', stages: [write, { id: 's', plugin: 'test:shout', params: { alwaysFail: true }, retry: fast }] });
    await until(skipped, 'PAUSED');
    await stack.gql(`mutation($id: ID!) { skipStage(runId: $id, stageId: "s") { id } }`, { id: skipped });
    ids.skipped = await closed(skipped);

    const aborted = await start({ name: 'replay-aborted', stages: [write, { id: 's', plugin: 'test:shout', params: { alwaysFail: true }, retry: fast }] });
    await until(aborted, 'PAUSED');
    await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "recording") { id } }`, { id: aborted });
    ids.aborted = await closed(aborted);

    const failed = await start({
      name: 'replay-resumed',
      onFailure: { action: 'fail' },
      stages: [write, { id: 's', plugin: 'test:shout', params: { requireFile: path.join(stack.dataDir, 'go') }, retry: fast }],
    });
    await closed(failed);
    writeFileSync(path.join(stack.dataDir, 'go'), 'x');
    const resumed = (await stack.gql(`mutation($id: ID!) { resumeRun(runId: $id) { run { id } } }`, { id: failed })).data.resumeRun.run.id as string;
    ids.resumed = await closed(resumed);

    const cancelled = await start({ name: 'replay-cancelled', stages: [{ id: 'wait', plugin: 'test:wait', params: { ms: 60_000 } }] });
    // Cancelled while its stage's activity runs: once the stage has heartbeated.
    await waitFor(
      async () => (await stack.gql(`query($id: ID!) { run(id: $id) { stages { progress } } }`, { id: cancelled })).data.run.stages[0].progress,
      `${cancelled}'s wait stage to heartbeat`,
      120_000,
    );
    await stack.gql(`mutation($id: ID!) { cancelRun(runId: $id) { id } }`, { id: cancelled });
    ids.cancelled = await closed(cancelled);

    ids['data-parallel'] = await closed(await start({ name: 'replay-parallel', stages: [{ id: 'split', plugin: 'test:split', params: { replicas: 2 } }] }));

    const timedOut = await start({
      name: 'replay-timeout',
      onFailure: { action: 'pause', timeout: '2s' },
      stages: [write, { id: 's', plugin: 'test:shout', params: { alwaysFail: true }, retry: fast }],
    });
    ids['pause-timed-out'] = await closed(timedOut);

    mkdirSync(RECORD_DIR, { recursive: true });
    const index: Recorded[] = [];
    // A budget of 0 pauses before the first stage; a raise lets the run carry on.
    const budgeted = await start({ name: 'replay-budget', budget: { max: '0' }, stages: [write, { id: 's', plugin: 'test:shout' }] });
    await until(budgeted, 'PAUSED');
    await stack.gql(`mutation($id: ID!) { raiseBudget(runId: $id, max: "100.00") { id } }`, { id: budgeted });
    ids['budget-raised'] = await closed(budgeted);

    for (const scenario of SCENARIOS) {
      const id = ids[scenario];
      const history = await stack.client.workflow.getHandle(id).fetchHistory();
      const file = `${scenario}.history.bin`;
      writeFileSync(path.join(RECORD_DIR, file), temporal.api.history.v1.History.encode(history).finish());
      index.push({ scenario, workflowId: id, file });
    }
    writeFileSync(path.join(RECORD_DIR, 'index.json'), `${JSON.stringify(index, null, 2)}\n`);
    console.info(`[replay] recorded ${index.length} histories into ${path.relative(process.cwd(), RECORD_DIR)}`);
  });
});
