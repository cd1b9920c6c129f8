// An operator may turn tracing on over runs already in flight: the workflow then replays its
// history with Temporal's OpenTelemetry interceptors bundled in (app/workers.ts tracingPlugins).
// The recorded histories of test/workflows, written with tracing off, must replay unchanged.
import { Resource } from '@opentelemetry/resources';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { tracingPlugins, workflowsPath } from '../../app/workers.js';
import { loadRecorded } from '../workflows/histories.js';

describe('replaying recorded histories with the tracing interceptors installed', () => {
  it('replays every recorded history without a nondeterminism error', { timeout: 180_000 }, async () => {
    const recorded = loadRecorded();
    expect(recorded.length).toBeGreaterThan(0);
    const exporter = new InMemorySpanExporter();
    const tracing = {
      resource: new Resource({ 'service.name': 'capstan-replay' }),
      spanProcessor: new SimpleSpanProcessor(exporter),
      serviceName: 'capstan-replay',
      shutdown: async () => {},
    };
    const plugins = tracingPlugins(tracing).plugins;
    expect(plugins).toHaveLength(1);
    const results: { workflowId: string; error?: Error }[] = [];
    for await (const r of Worker.runReplayHistories(
      { workflowsPath, replayName: 'capstan-replay-traced', plugins },
      recorded.map(({ meta, history }) => ({ workflowId: meta.workflowId, history })),
    )) {
      results.push({ workflowId: r.workflowId, ...(r.error ? { error: r.error } : {}) });
    }
    expect(results.filter((r) => r.error).map((r) => `${r.workflowId}: ${r.error!.message}`)).toEqual([]);
    expect(results).toHaveLength(recorded.length);
  });
});
