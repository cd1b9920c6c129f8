// A stage that does nothing but note when it started and ended (wall clock, ms): what the
// orchestration benchmarks run to measure the gap between stages.
import { z } from 'zod';
import { defineStage, PLUGIN_API_VERSION } from '../plugins/contract.js';

export const trivialStage = defineStage({
  name: 'bench:trivial',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'does nothing but note the time',
  paramsSchema: z.object({}),
  consumes: [],
  produces: [],
  resource: 'cpu',
  async run() {
    const startedAt = performance.timeOrigin + performance.now();
    return { outputs: {}, metrics: { startedAt, endedAt: performance.timeOrigin + performance.now() } };
  },
});
