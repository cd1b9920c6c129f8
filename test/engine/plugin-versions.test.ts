import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipelineWorkflow } from '../../workflows/index.js';
import { PipelineNameKey, RunStatusKey } from '../../workflows/search-attributes.js';
import { writeNoteStage } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

// Version 2 of the same plugin, installed side by side with version 1.
const writeNoteV2 = { ...writeNoteStage, version: '2.0.0', description: 'writes a note artifact (v2)' };

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins: [writeNoteStage, writeNoteV2] });
});
afterAll(async () => {
  await stack?.close();
});

const q = `query($id: ID!) { run(id: $id) { status pausedStages stages { id status error errorType metrics } } }`;

describe('plugin versions side by side', () => {
  it('lists every installed version and runs a spec pinned to either', async () => {
    const plugins = (await stack.gql('{ stagePlugins { name version } }')).data.stagePlugins.filter((p: { name: string }) => p.name === 'test:write-note');
    expect(plugins.map((p: { version: string }) => p.version)).toEqual(['1.0.0', '2.0.0']);
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: { name: 'pinned', stages: [{ id: 'w', plugin: 'test:write-note', version: '1.0.0' }] },
    });
    const id = r.data.startPipeline.id;
    await waitFor(async () => (await stack.gql(q, { id })).data.run.status === 'COMPLETED', 'pinned run', 60_000);
  });

  it('a run pinned to a version no longer installed pauses with the reason, and retryStage moves it to an installed version', async () => {
    // As after an upgrade that removed 0.9.0: the run's input still names it.
    const input = {
      pipeline: 'upgraded',
      spec: { name: 'upgraded', stages: [{ id: 'w', plugin: 'test:write-note', version: '0.9.0' }] },
      stages: [
        {
          id: 'w',
          plugin: 'test:write-note',
          pluginVersion: '0.9.0',
          params: { text: 'old run' },
          needs: [],
          inputs: {},
          produces: ['note'],
          taskQueue: stack.taskQueues.cpu,
          retry: { maximumAttempts: 1, initialIntervalMs: 100, backoffCoefficient: 1, maximumIntervalMs: 100, nonRetryableErrorTypes: [] },
          startToCloseMs: 60_000,
          heartbeatMs: 10_000,
          replicas: 1,
          cache: false,
        },
      ],
      onFailure: { action: 'pause' as const, timeoutMs: 600_000 },
    };
    const id = 'pipeline/upgraded/old01';
    await stack.client.workflow.start(runPipelineWorkflow, {
      taskQueue: stack.taskQueues.workflows,
      workflowId: id,
      args: [input],
      typedSearchAttributes: [
        { key: PipelineNameKey, value: 'upgraded' },
        { key: RunStatusKey, value: 'RUNNING' },
      ],
    });
    const paused = await waitFor(
      async () => {
        const run = (await stack.gql(q, { id })).data.run;
        return run.status === 'PAUSED' ? run : undefined;
      },
      'the run to pause',
      60_000,
    );
    expect(paused.pausedStages).toEqual(['w']);
    expect(paused.stages[0].errorType).toBe('UNKNOWN_PLUGIN');
    expect(paused.stages[0].error).toContain('test:write-note@0.9.0 is not installed');
    expect(paused.stages[0].error).toContain('installed: 1.0.0, 2.0.0');

    const missing = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "w", pluginVersion: "3.0.0") { status } }`, { id });
    expect(missing.errors?.[0]?.extensions.code).toBe('UNKNOWN_PLUGIN');
    const badParams = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "w", pluginVersion: "2.0.0", params: { text: 5 }) { status } }`, {
      id,
    });
    expect(badParams.errors?.[0]?.extensions.code).toBe('PLUGIN_PARAMS_INVALID');

    const moved = await stack.gql(`mutation($id: ID!) { retryStage(runId: $id, stageId: "w", pluginVersion: "2.0.0") { status } }`, { id });
    expect(moved.errors).toBeUndefined();
    const done = await waitFor(
      async () => {
        const run = (await stack.gql(q, { id })).data.run;
        return run.status === 'COMPLETED' ? run : undefined;
      },
      'the run to complete',
      60_000,
    );
    expect(done.stages[0].status).toBe('SUCCEEDED');
    expect(done.stages[0].metrics.chars).toBe('old run'.length);
  });
});
