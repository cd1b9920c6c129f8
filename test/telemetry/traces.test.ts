// Tracing end to end (issue 22): a run started through GraphQL on a real Temporal dev server and a
// real worker, exported over OTLP to a real Jaeger, is read back from Jaeger's query API as ONE
// trace: the GraphQL operation, the workflow, every stage attempt (with the run id) and the
// training child process's own span under its stage attempt.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTrace, resolveJaeger, spanTag, startJaeger, type Jaeger, type JaegerSpan, type JaegerTrace } from '../../dev/jaeger.js';
import { silentLogger } from '../../lib/logger.js';
import { activeTracing, startTracing, type Tracing } from '../../lib/telemetry/tracing.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const root = path.resolve(import.meta.dirname, '../..');
let jaeger: Jaeger;
let tracing: Tracing | undefined;
let stack: TestStack;

beforeAll(async () => {
  const bin = resolveJaeger({ toolsDir: path.join(root, '.tools'), env: process.env, logger: silentLogger });
  jaeger = await startJaeger({ jaegerPath: bin.path, dir: mkdtempSync(path.join(os.tmpdir(), 'capstan-jaeger-')), logger: silentLogger });
  // The standard variables, as an operator sets them; the training children inherit them.
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = jaeger.otlpEndpoint;
  process.env.OTEL_BSP_SCHEDULE_DELAY = '200';
  tracing = await startTracing({ enabled: true, defaultServiceName: 'capstan-api', env: process.env });
  stack = await startTestStack({
    plugins: [dataPrepStage(), pretrainStage(), roiLedgerStage()],
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpEndpoint, CAPSTAN_TRACE_UI_URL: `${jaeger.queryUrl}/trace/{traceId}` },
  });
});

afterAll(async () => {
  await stack?.close();
  await tracing?.shutdown();
  await jaeger?.stop();
});

const spec = {
  name: 'traced',
  stages: [
    { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 1000, seed: 5 } },
    { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 1 } },
    { id: 'ledger', plugin: 'core:roi-ledger', params: { revenue: { kind: 'contract', value: '5.00' } } },
  ],
};

/** The chain of a span's parents (CHILD_OF references) up to the trace's root, names only. */
function ancestors(trace: JaegerTrace, span: JaegerSpan): string[] {
  const byId = new Map(trace.spans.map((s) => [s.spanID, s]));
  const out: string[] = [];
  let cur: JaegerSpan | undefined = span;
  while (cur) {
    const ref: JaegerSpan['references'][number] | undefined = cur.references.find((r) => r.refType === 'CHILD_OF');
    cur = ref ? byId.get(ref.spanID) : undefined;
    if (cur) out.push(cur.operationName);
  }
  return out;
}

describe('traces of a pipeline run in Jaeger', () => {
  it('finds one trace from startPipeline through the workflow and every stage attempt into the training child', { timeout: 600_000 }, async () => {
    expect(activeTracing()).toBeDefined();
    const started = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id traceId } }`, { s: spec });
    expect(started.errors, JSON.stringify(started.errors)).toBeUndefined();
    const runId: string = started.data.startPipeline.id;
    const traceId: string = started.data.startPipeline.traceId;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);

    const run = await waitFor(
      async () => {
        const r = await stack.gql(`query($id: ID!) { run(id: $id) { status traceId traceUrl stages { id status attempts } events { message } } }`, { id: runId });
        const v = r.data.run;
        if (['FAILED', 'CANCELLED', 'TERMINATED'].includes(v.status)) throw new Error(`run ${runId} is ${v.status}: ${JSON.stringify(v.events.at(-1))}`);
        return v.status === 'COMPLETED' ? v : undefined;
      },
      `run ${runId} to complete`,
      480_000,
      500,
    );
    expect(run.traceId).toBe(traceId);
    expect(run.traceUrl).toBe(`${jaeger.queryUrl}/trace/${traceId}`);

    await activeTracing()!.spanProcessor.forceFlush();
    const stageIds = spec.stages.map((s) => s.id);
    const attemptsOf = (t: JaegerTrace) => t.spans.filter((s) => s.operationName.startsWith('capstan.stage.attempt '));
    const trace = await waitFor(
      async () => {
        const t = await readTrace(jaeger.queryUrl, traceId);
        if (!t) return undefined;
        const names = t.spans.map((s) => s.operationName);
        const complete =
          names.includes('graphql.mutation startPipeline') &&
          names.some((n) => n === 'RunWorkflow:runPipelineWorkflow') &&
          stageIds.every((id) => names.includes(`capstan.stage.attempt ${id}`)) &&
          names.includes('capstan.training.child');
        return complete ? t : undefined;
      },
      `trace ${traceId} in Jaeger with the operation, workflow, stage attempt and training child spans`,
      60_000,
      300,
    );

    // One trace: every span carries the run's trace id.
    expect(new Set(trace.spans.map((s) => s.traceID))).toEqual(new Set([traceId]));
    // Every stage attempt span names the run, its stage, plugin and attempt, and descends from startPipeline through the workflow.
    const attempts = attemptsOf(trace);
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
    const parent = trace.spans.find((s) => s.spanID === child.references.find((r) => r.refType === 'CHILD_OF')?.spanID);
    expect(parent?.operationName).toBe('capstan.stage.attempt pretrain');
    expect(spanTag(parent!, 'capstan.run_id')).toBe(runId);
    // The operation span says what it was.
    const op = trace.spans.find((s) => s.operationName === 'graphql.mutation startPipeline')!;
    expect(spanTag(op, 'graphql.operation.type')).toBe('mutation');
    expect(spanTag(op, 'graphql.operation.name')).toBe('startPipeline');
  });
});
