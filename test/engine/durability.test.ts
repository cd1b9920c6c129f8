import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins: [dataPrepStage(), pretrainStage()] });
});
afterAll(async () => {
  await stack?.close();
});

describe('durable training', () => {
  it('resumes pretraining from the last checkpoint after the worker goes away mid-run', async () => {
    // Enough data that the epochs left after the stop take longer than the workers' 2 s shutdown
    // grace: the step loop trains 4,000 samples an epoch in a fraction of a second.
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: {
        name: 'crash-resume',
        stages: [
          { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 20000 } },
          {
            id: 'train',
            plugin: 'core:pretrain',
            params: { epochs: 12 },
            timeouts: { heartbeat: '2s' },
            retry: { maximumAttempts: 3, initialInterval: '500ms' },
          },
        ],
      },
    });
    const id: string = r.data.startPipeline.id;
    const q = `query($id: ID!) { run(id: $id) { status stages { id status attempts progress currentAttempt metrics } } }`;
    // Wait until training has checkpointed at least two epochs (heartbeat details reach the server
    // every 0.8 × the heartbeat timeout, so a short timeout keeps them visible while epochs run)…
    const seen = await waitFor(
      async () => {
        const run = (await stack.gql(q, { id })).data.run;
        const p = run.stages[1].progress;
        return p && p.epoch >= 2 ? p : undefined;
      },
      'two checkpointed epochs',
      120_000,
      100,
    );
    // …then the worker goes away (its running attempt is cut off) and a new one comes up.
    await stack.stopWorkers();
    await stack.startWorkers();
    const done = await waitFor(
      async () => {
        const run = (await stack.gql(q, { id })).data.run;
        return run.status === 'COMPLETED' ? run : undefined;
      },
      'the run to complete',
      240_000,
      500,
    );
    const train = done.stages[1];
    expect(train.status).toBe('SUCCEEDED');
    expect(train.attempts).toBeGreaterThanOrEqual(2);
    // The retry started from the checkpoint, not from epoch 0.
    expect(train.metrics.resumedFromEpoch).toBeGreaterThanOrEqual(seen.epoch);
    expect(train.metrics.epochsRun).toBeLessThan(12);
    expect(train.metrics.testAccuracy).toBeGreaterThan(0.5);
  });
});
