// A stage in Python written with the SDK joins the run's trace (issue 22): the worker passes
// TRACEPARENT and its OTEL_* exporter settings to the command stage's process, and the SDK (with
// its optional opentelemetry packages, installed by npm run setup:python) exports a span
// `capstan.python.stage` under the stage attempt's span, with the span the script makes itself under it.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spanTag } from '../../dev/jaeger.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { StageRegistry } from '../../plugins/registry.js';
import { ancestors, parentOf, runTraced, startTracedStack, traceWith, type TracedStack } from './traced-stack.js';

const fixture = path.resolve(import.meta.dirname, '../fixtures/command-stages/traced');
let t: TracedStack;
beforeAll(async () => {
  const stages = new StageRegistry();
  expect(await loadExternalPlugins(stages, [fixture], { cwd: process.cwd() })).toEqual(['test:py-traced@1.0.0']);
  t = await startTracedStack([stages.get('test:py-traced')!]);
});
afterAll(async () => {
  await t?.close();
});

describe('a Python stage in the run trace', () => {
  it('exports the SDK span as a child of the stage attempt, in the trace that startPipeline began', { timeout: 600_000 }, async () => {
    const { runId, traceId } = await runTraced(t.stack, { name: 'py-traced', stages: [{ id: 'py', plugin: 'test:py-traced', params: {} }] });
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    const trace = await traceWith(t, traceId, ['graphql.mutation startPipeline', 'capstan.stage.attempt py', 'capstan.python.stage', 'report.write']);

    const py = trace.spans.find((s) => s.operationName === 'capstan.python.stage')!;
    expect(trace.processes[py.processID]?.serviceName).toBe('capstan-python-stage');
    expect(spanTag(py, 'capstan.run_id')).toBe(runId);
    expect(spanTag(py, 'capstan.stage.id')).toBe('py');
    expect(spanTag(py, 'process.pid')).not.toBe(process.pid);
    expect(parentOf(trace, py)?.operationName).toBe('capstan.stage.attempt py');
    expect(ancestors(trace, py).at(-1)).toBe('graphql.mutation startPipeline');
    // The script's own span nests under the SDK's.
    const own = trace.spans.find((s) => s.operationName === 'report.write')!;
    expect(parentOf(trace, own)?.spanID).toBe(py.spanID);
  });
});
