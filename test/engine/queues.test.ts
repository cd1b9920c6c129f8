import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSpec } from '../../engine/spec.js';
import { runPipelineWorkflow } from '../../workflows/index.js';
import { CurrentStageKey } from '../../workflows/search-attributes.js';
import type { RunState } from '../../workflows/types.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins });
});
afterAll(async () => {
  await stack?.close();
});

const spec = {
  name: 'queues',
  stages: [
    { id: 'w', plugin: 'test:write-note', params: { text: 'q' } },
    { id: 's', plugin: 'test:shout' },
  ],
};

describe('task queues', () => {
  it('runs cpu stages on the workflows’ own queue (one worker serves both) and clears CapstanStage when the run closes', async () => {
    expect(stack.taskQueues.cpu).toBe(stack.taskQueues.workflows);
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec });
    const id: string = r.data.startPipeline.id;
    const handle = stack.client.workflow.getHandle(id);
    await handle.result();
    const history = await handle.fetchHistory();
    const scheduled = (history.events ?? []).map((e) => e.activityTaskScheduledEventAttributes).filter((a) => a?.activityId?.startsWith('stage:'));
    expect(scheduled.map((a) => [a!.activityId, a!.taskQueue?.name])).toEqual([
      ['stage:w', stack.taskQueues.workflows],
      ['stage:s', stack.taskQueues.workflows],
    ]);
    // One CapstanStage upsert per stage (at its start) and one at the close, not two per stage.
    const upserts = (history.events ?? []).filter(
      (e) => e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.[CurrentStageKey.name],
    );
    expect(upserts).toHaveLength(3);
    const desc = await handle.describe();
    expect(desc.typedSearchAttributes.get(CurrentStageKey) ?? null).toBeNull();
  });

  it('still serves runs whose stages name the cpu queue of earlier versions', async () => {
    const legacy = (stack.taskQueues as { legacyCpu?: string }).legacyCpu;
    expect(legacy).toBe(`${stack.taskQueues.workflows}-cpu`);
    // A run (or a schedule's stored spec) resolved before this version names <queue>-cpu.
    const { parsedParams: _p, watch: _w, ...input } = resolveSpec(spec, stack.stages, { taskQueues: { cpu: legacy!, gpu: stack.taskQueues.gpu } });
    expect(input.stages.map((s) => s.taskQueue)).toEqual([legacy, legacy]);
    const id = `pipeline/queues/legacy-${Date.now().toString(36)}`;
    const handle = await stack.client.workflow.start(runPipelineWorkflow, { taskQueue: stack.taskQueues.workflows, workflowId: id, args: [input] });
    const state = (await waitFor(() => handle.result() as Promise<RunState>, 'the legacy-queue run', 60_000)) as RunState;
    expect(state.status).toBe('COMPLETED');
    expect(state.stages.map((s) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED']);
  });
});
