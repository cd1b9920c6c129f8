// A real stack that traces into a real Jaeger: the tracing tests' common start. The OTEL_*
// variables are set on this process as an operator would set them, so the processes the worker
// starts (training children, command stages) inherit them.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readTrace, resolveJaeger, startJaeger, type Jaeger, type JaegerSpan, type JaegerTrace } from '../../dev/jaeger.js';
import { silentLogger } from '../../lib/logger.js';
import { startTracing, type Tracing } from '../../lib/telemetry/tracing.js';
import type { StagePlugin } from '../../plugins/contract.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const root = path.resolve(import.meta.dirname, '../..');

export interface TracedStack {
  stack: TestStack;
  jaeger: Jaeger;
  tracing: Tracing;
  close(): Promise<void>;
}

export async function startTracedStack(plugins: StagePlugin<any>[]): Promise<TracedStack> {
  const bin = resolveJaeger({ toolsDir: path.join(root, '.tools'), env: process.env, logger: silentLogger });
  const jaeger = await startJaeger({ jaegerPath: bin.path, dir: mkdtempSync(path.join(os.tmpdir(), 'capstan-jaeger-')), logger: silentLogger });
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = jaeger.otlpEndpoint;
  process.env.OTEL_BSP_SCHEDULE_DELAY = '200';
  const tracing = await startTracing({ enabled: true, defaultServiceName: 'capstan-api', env: process.env });
  if (!tracing) throw new Error('tracing did not start');
  const stack = await startTestStack({
    plugins,
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpEndpoint, CAPSTAN_TRACE_UI_URL: `${jaeger.queryUrl}/trace/{traceId}` },
  });
  return {
    stack,
    jaeger,
    tracing,
    async close() {
      await stack.close();
      await tracing.shutdown();
      await jaeger.stop();
    },
  };
}

/** Starts a run through GraphQL startPipeline and waits until it completes; its id and trace id. */
export async function runTraced(stack: TestStack, spec: unknown): Promise<{ runId: string; traceId: string; run: any }> {
  const started = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id traceId } }`, { s: spec });
  if (started.errors) throw new Error(JSON.stringify(started.errors));
  const runId: string = started.data.startPipeline.id;
  const run = await waitFor(
    async () => {
      const v = (
        await stack.gql(`query($id: ID!) { run(id: $id) { status traceId traceUrl stages { id status attempts error } events { message } } }`, { id: runId })
      ).data.run;
      if (['FAILED', 'CANCELLED', 'TERMINATED'].includes(v.status)) throw new Error(`run ${runId} is ${v.status}: ${JSON.stringify(v.stages)}`);
      return v.status === 'COMPLETED' ? v : undefined;
    },
    `run ${runId} to complete`,
    480_000,
    500,
  );
  return { runId, traceId: started.data.startPipeline.traceId, run };
}

/** Reads the trace back from Jaeger until it holds every span name in `names`. */
export async function traceWith(t: TracedStack, traceId: string, names: (string | RegExp)[]): Promise<JaegerTrace> {
  await t.tracing.spanProcessor.forceFlush();
  return waitFor(
    async () => {
      const tr = await readTrace(t.jaeger.queryUrl, traceId);
      const have = tr?.spans.map((s) => s.operationName) ?? [];
      return tr && names.every((n) => have.some((h) => (typeof n === 'string' ? h === n : n.test(h)))) ? tr : undefined;
    },
    `trace ${traceId} in Jaeger with spans ${names.join(', ')}`,
    60_000,
    300,
  );
}

/** The chain of a span's parents (CHILD_OF references) up to the trace's root, names only. */
export function ancestors(trace: JaegerTrace, span: JaegerSpan): string[] {
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

/** A span's parent (CHILD_OF), if it is in the trace. */
export function parentOf(trace: JaegerTrace, span: JaegerSpan): JaegerSpan | undefined {
  const ref = span.references.find((r) => r.refType === 'CHILD_OF');
  return ref ? trace.spans.find((s) => s.spanID === ref.spanID) : undefined;
}
