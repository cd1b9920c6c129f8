// What one stage attempt takes it gives back, whatever ends it: the worker's device and an open
// attempt record. Run through the real dispatch activity (runStage) in Temporal's mock activity
// environment, on a gpu stage with the stage cache on.
import { MockActivityEnvironment } from '@temporalio/testing';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevicePool } from '../../activities/devices.js';
import { createActivities, type StageCache } from '../../activities/index.js';
import type { StageRecorder } from '../../activities/stage-records.js';
import { silentLogger } from '../../lib/logger.js';
import { defineStage, PLUGIN_API_VERSION } from '../../plugins/contract.js';
import { StageRegistry } from '../../plugins/registry.js';
import type { ResolvedStage, StageOutcome } from '../../workflows/types.js';
import { noServices, tmpStore } from '../ml/helpers.js';

let runs = 0;
const gpuStage = defineStage({
  name: 'test:gpu-noop',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'holds a device and does nothing',
  paramsSchema: z.object({}),
  consumes: [],
  produces: [],
  resource: 'gpu',
  async run() {
    runs++;
    return { outputs: {}, metrics: {} };
  },
});

const stage: ResolvedStage = {
  id: 'fit',
  plugin: gpuStage.name,
  pluginVersion: gpuStage.version,
  params: {},
  needs: [],
  inputs: {},
  produces: [],
  taskQueue: 'test-gpu',
  retry: { maximumAttempts: 1, initialIntervalMs: 100, backoffCoefficient: 1, maximumIntervalMs: 100, nonRetryableErrorTypes: [] },
  startToCloseMs: 60_000,
  heartbeatMs: 60_000,
  replicas: 1,
  cache: true,
};

/** Attempt records as the worker writes them, in memory: opened and closed. */
function recorder() {
  const open = new Set<string>();
  const closed: { outcome: string; error?: string }[] = [];
  const r: StageRecorder = {
    async attemptStarted(a) {
      open.add(`${a.activityId}#${a.attempt}`);
    },
    async attemptClosed(a) {
      open.delete(`${a.activityId}#${a.attempt}`);
      closed.push({ outcome: a.outcome, ...(a.error ? { error: a.error } : {}) });
    },
    async epoch() {},
  };
  return { r, open, closed };
}

describe('a stage attempt gives back what it took', () => {
  let store: Awaited<ReturnType<typeof tmpStore>>;
  beforeAll(async () => {
    store = await tmpStore();
  });
  afterAll(async () => {
    await store?.cleanup();
  });

  const run = (o: { cache: StageCache; devices: DevicePool; records: StageRecorder }) => {
    const acts = createActivities({
      stages: new StageRegistry().register(gpuStage).freeze(),
      artifacts: store.store,
      services: noServices,
      logger: silentLogger,
      cache: o.cache,
      devices: o.devices,
      records: o.records,
    });
    return new MockActivityEnvironment({ attempt: 1 }).run(acts.runStage, { runId: 'run-1', pipeline: 'p', stage, inputs: {} }) as Promise<StageOutcome>;
  };

  it('returns the device and closes the attempt record when the cache lookup throws', async () => {
    const devices = new DevicePool([{ kind: 'cpu', id: '0' }]);
    const rec = recorder();
    const broken: StageCache = {
      lookup: async () => {
        throw new Error('stage cache unreachable');
      },
      store: async () => {},
    };
    await expect(run({ cache: broken, devices, records: rec.r })).rejects.toThrow(/stage cache unreachable/);
    expect(devices.available).toBe(1);
    expect(rec.open.size).toBe(0);
    expect(rec.closed).toEqual([{ outcome: 'failed', error: expect.stringMatching(/stage cache unreachable/) }]);
    expect(runs).toBe(0);
  });

  it('returns the device on a cache hit and after a plugin run, so attempts one after another all get it', async () => {
    const devices = new DevicePool([{ kind: 'cpu', id: '0' }]);
    const rec = recorder();
    let stored: Parameters<StageCache['store']>[3] | undefined;
    const cache: StageCache = { lookup: async () => stored, store: async (_k, _r, _s, result) => void (stored = result) };
    const first = await run({ cache, devices, records: rec.r });
    expect(first.metrics.cacheHit).toBeUndefined();
    expect(devices.available).toBe(1);
    const second = await run({ cache, devices, records: rec.r });
    expect(second.metrics.cacheHit).toBe(true);
    expect(devices.available).toBe(1);
    expect(rec.closed.map((c) => c.outcome)).toEqual(['succeeded', 'succeeded']);
    expect(rec.open.size).toBe(0);
  });
});
