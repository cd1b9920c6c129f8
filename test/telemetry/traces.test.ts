// Tracing end to end (issue 22): a run started through GraphQL on a real Temporal dev server and a
// real worker, exported over OTLP to a real Jaeger, is read back from Jaeger's query API as ONE
// trace: the GraphQL operation, the workflow, every stage attempt (with the run id) and the
// training child process's own span under its stage attempt.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spanTag } from '../../dev/jaeger.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { waitFor } from '../helpers/stack.js';
import { ancestors, parentOf, runTraced, startTracedStack, traceWith, type TracedStack } from './traced-stack.js';

let t: TracedStack;
beforeAll(async () => {
  t = await startTracedStack([dataPrepStage(), pretrainStage(), roiLedgerStage()]);
});
afterAll(async () => {
  await t?.close();
});

const spec = {
  name: 'traced',
  stages: [
    { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 1000, seed: 5 } },
    { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 1 } },
    { id: 'ledger', plugin: 'core:roi-ledger', params: { revenue: { kind: 'contract', value: '5.00' } } },
  ],
};

describe('traces of a pipeline run in Jaeger', () => {
  it('finds one trace from startPipeline through the workflow and every stage attempt into the training child', { timeout: 600_000 }, async () => {
    const { runId, traceId, run } = await runTraced(t.stack, spec);
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(run.traceId).toBe(traceId);
    expect(run.traceUrl).toBe(`${t.jaeger.queryUrl}/trace/${traceId}`);

    // The workflow knows its own trace too (what a schedule's run, started by no request, is read by).
    expect((await t.stack.client.workflow.getHandle(runId).result()).traceId).toBe(traceId);

    const stageIds = spec.stages.map((s) => s.id);
    const trace = await traceWith(t, traceId, [
      'graphql.mutation startPipeline',
      'RunWorkflow:runPipelineWorkflow',
      ...stageIds.map((id) => `capstan.stage.attempt ${id}`),
      'capstan.training.child',
      'capstan.ledger.book_run',
    ]);

    // One trace: every span carries the run's trace id.
    expect(new Set(trace.spans.map((s) => s.traceID))).toEqual(new Set([traceId]));
    // Every stage attempt span names the run, its stage, plugin and attempt, and descends from startPipeline through the workflow.
    const attempts = trace.spans.filter((s) => s.operationName.startsWith('capstan.stage.attempt '));
    expect(attempts.map((s) => spanTag(s, 'capstan.stage.id')).sort()).toEqual([...stageIds].sort());
    for (const a of attempts) {
      expect(spanTag(a, 'capstan.run_id')).toBe(runId);
      expect(spanTag(a, 'capstan.stage.attempt')).toBe(1);
      expect(String(spanTag(a, 'capstan.stage.plugin'))).toMatch(/^core:[a-z-]+@/);
      const up = ancestors(trace, a);
      expect(up).toContain('RunWorkflow:runPipelineWorkflow');
      expect(up.at(-1)).toBe('graphql.mutation startPipeline');
    }
    // The training child: its own process (another pid, another service), a child of the pretrain attempt.
    const child = trace.spans.find((s) => s.operationName === 'capstan.training.child')!;
    expect(spanTag(child, 'capstan.job.kind')).toBe('pretrain');
    expect(spanTag(child, 'process.pid')).not.toBe(process.pid);
    expect(trace.processes[child.processID]?.serviceName).toBe('capstan-training');
    const parent = parentOf(trace, child);
    expect(parent?.operationName).toBe('capstan.stage.attempt pretrain');
    expect(spanTag(parent!, 'capstan.run_id')).toBe(runId);
    // Inside the attempts: the artifact store's puts (the outputs sealed) and the ledger's booking of the run.
    const puts = trace.spans.filter((s) => s.operationName === 'capstan.artifact.put');
    expect(puts.map((p) => parentOf(trace, p)?.operationName)).toContain('capstan.stage.attempt pretrain');
    expect(puts.every((p) => Number(spanTag(p, 'capstan.artifact.bytes')) > 0)).toBe(true);
    const booking = trace.spans.find((s) => s.operationName === 'capstan.ledger.book_run');
    expect(booking && spanTag(booking, 'capstan.run_id')).toBe(runId);
    expect(ancestors(trace, booking!)).toContain('capstan.stage.attempt ledger');
    // The operation span says what it was.
    const op = trace.spans.find((s) => s.operationName === 'graphql.mutation startPipeline')!;
    expect(spanTag(op, 'graphql.operation.type')).toBe('mutation');
    expect(spanTag(op, 'graphql.operation.name')).toBe('startPipeline');
  });

  it('gives a run a schedule fired (no request to trace) the trace of its own workflow', { timeout: 300_000 }, async () => {
    const { stack } = t;
    const saved = await stack.gql(`mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }`, {
      s: { name: 'traced-scheduled', stages: [{ id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 500, seed: 8 } }] },
    });
    expect(saved.errors, JSON.stringify(saved.errors)).toBeUndefined();
    const created = await stack.gql('mutation { schedulePipeline(name: "traced-scheduled", every: "1h") { id } }');
    expect(created.errors, JSON.stringify(created.errors)).toBeUndefined();
    const handle = stack.client.schedule.getHandle(created.data.schedulePipeline.id);
    try {
      await handle.trigger();
      const firing = await waitFor(async () => (await handle.describe()).info.recentActions[0]?.action.workflow, 'the schedule to fire', 60_000);
      await stack.client.workflow.getHandle(firing.workflowId).result();
      const run = (await stack.gql(`query($id: ID!) { run(id: $id) { status traceId traceUrl } }`, { id: firing.workflowId })).data.run;
      expect(run.status).toBe('COMPLETED');
      expect(run.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(run.traceUrl).toBe(`${t.jaeger.queryUrl}/trace/${run.traceId}`);
      // That trace holds the run's workflow and its stage attempt.
      const trace = await traceWith(t, run.traceId, ['RunWorkflow:runPipelineWorkflow', 'capstan.stage.attempt data']);
      const attempt = trace.spans.find((s) => s.operationName === 'capstan.stage.attempt data')!;
      expect(spanTag(attempt, 'capstan.run_id')).toBe(firing.workflowId);
      expect(ancestors(trace, attempt)).toContain('RunWorkflow:runPipelineWorkflow');
    } finally {
      await handle.delete();
    }
  });
});
