import { describe, expect, it } from 'vitest';
import { checkApiBinding, loadConfig } from '../../app/config.js';
import { maxParallel, resolveSpec, SPEC_LIMITS, SpecValidationError, type SpecIssue } from '../../engine/spec.js';
import { visibilityString } from '../../engine/run-list.js';
import { z } from '../../plugins/sdk.js';
import { defineStage, PLUGIN_API_VERSION } from '../../plugins/contract.js';
import { StageRegistry } from '../../plugins/registry.js';

const note = defineStage({
  name: 'test:note',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'a note',
  // A lenient (stripping) schema, as many plugins write them: unknown keys must still be refused.
  paramsSchema: z.object({
    text: z.string().default('x'),
    source: z.discriminatedUnion('format', [z.object({ format: z.literal('csv'), path: z.string() }), z.object({ format: z.literal('mnist') })]).optional(),
    labels: z.record(z.string(), z.number()).optional(),
    layers: z.array(z.object({ units: z.number() })).optional(),
  }),
  consumes: [],
  produces: ['note'],
  resource: 'cpu',
  async run() {
    return { outputs: {}, metrics: {} };
  },
});
const registry = new StageRegistry().register(note).freeze();
const queues = { taskQueues: { cpu: 'c', gpu: 'g' } };

function issues(spec: unknown): SpecIssue[] {
  try {
    resolveSpec(spec, registry, queues);
    return [];
  } catch (e) {
    if (e instanceof SpecValidationError) return e.issues;
    throw e;
  }
}
const stage = (id: string, extra: Record<string, unknown> = {}) => ({ id, plugin: 'test:note', ...extra });

describe('spec limits', () => {
  it('refuses unknown param keys at any depth, naming each path (lenient schemas included)', () => {
    const found = issues({
      name: 'p',
      stages: [stage('a', { params: { txt: 'typo', source: { format: 'csv', path: 'x.csv', lable: 'y' }, labels: { any: 1 }, layers: [{ units: 2, unit: 3 }] } })],
    });
    expect(found.filter((i) => i.code === 'UNKNOWN_PARAM').map((i) => i.path)).toEqual(['stages[0].params.txt', 'stages[0].params.source.lable', 'stages[0].params.layers[0].unit']);
    expect(issues({ name: 'p', stages: [stage('a', { params: { text: 'ok', labels: { free: 1 } } })] })).toEqual([]);
  });

  it('refuses an inputs entry for a kind the plugin does not consume', () => {
    const found = issues({ name: 'p', stages: [stage('a', { inputs: { nope: 'nowhere' } })] });
    expect(found.map((i) => `${i.path} ${i.code}`)).toEqual(['stages[0].inputs.nope MISSING_INPUT']);
  });

  it('bounds timeouts: zero, too long, and a heartbeat beyond startToClose are refused', () => {
    const at = (timeouts: unknown, retry?: unknown) => issues({ name: 'p', stages: [stage('a', { timeouts, ...(retry ? { retry } : {}) })] }).map((i) => `${i.path}: ${i.message}`);
    expect(at({ startToClose: 0 })).toEqual(['stages[0].timeouts.startToClose: must be between 1s and 7d; got 0s']);
    expect(at({ startToClose: '30d' })[0]).toContain('must be between 1s and 7d');
    expect(at({ heartbeat: '0s' })[0]).toContain('stages[0].timeouts.heartbeat');
    expect(at({ startToClose: '1m', heartbeat: '5m' })).toEqual(['stages[0].timeouts.heartbeat: the heartbeat timeout (5m) must not exceed startToClose (1m)']);
    expect(at(undefined, { initialInterval: 0 })[0]).toContain('stages[0].retry.initialInterval');
    expect(issues({ name: 'p', onFailure: { action: 'pause', timeout: '90d' }, stages: [stage('a')] })[0]!.path).toBe('onFailure.timeout');
  });

  it('bounds the size of a spec: stage count, params bytes, whole spec', () => {
    const many = Array.from({ length: SPEC_LIMITS.stages + 1 }, (_, i) => stage(`s${i}`));
    expect(issues({ name: 'p', stages: many }).map((i) => i.path)).toContain('stages');
    const big = 'x'.repeat(SPEC_LIMITS.paramsBytes);
    expect(issues({ name: 'p', stages: [stage('a', { params: { text: big } })] })[0]!.path).toBe('stages[0].params');
    const huge = { name: 'p', description: 'd', stages: [stage('a')], padding: 'x'.repeat(SPEC_LIMITS.specBytes) };
    expect(issues(huge)[0]!.message).toMatch(/bytes of JSON; at most/);
  });

  it('refuses more stages running at once than the limit, and counts dependencies right', () => {
    const wide = Array.from({ length: SPEC_LIMITS.parallelStages + 1 }, (_, i) => stage(`s${i}`, { needs: [] }));
    const found = issues({ name: 'p', stages: wide });
    expect(found.map((i) => i.code)).toEqual(['TOO_PARALLEL']);
    expect(found[0]!.message).toContain(`${SPEC_LIMITS.parallelStages + 1} stages could run at the same time`);
    // Exactly at the limit, or a long chain, is fine.
    expect(issues({ name: 'p', stages: wide.slice(1) })).toEqual([]);
    expect(issues({ name: 'p', stages: Array.from({ length: SPEC_LIMITS.stages }, (_, i) => stage(`s${i}`)) })).toEqual([]);
    // Diamond a → (b, c) → d: two at most.
    const anc = new Map(Object.entries({ a: [], b: ['a'], c: ['a'], d: ['b', 'c', 'a'] }));
    expect(maxParallel(['a', 'b', 'c', 'd'].map((id) => ({ id })), anc).sort()).toEqual(['b', 'c']);
  });

  it('escapes visibility query strings (quotes and backslashes)', () => {
    expect(visibilityString(`x' OR 1=1 \\`)).toBe(`'x\\' OR 1=1 \\\\'`);
  });

  it('refuses CAPSTAN_AUTH=off on a non-loopback address, allows it on loopback', () => {
    const cfg = (env: Record<string, string>) => loadConfig({ CAPSTAN_DATA_DIR: '/tmp/x', ...env }, '/tmp');
    expect(() => checkApiBinding(cfg({ CAPSTAN_AUTH: 'off', CAPSTAN_API_HOST: '0.0.0.0' }))).toThrow(/refusing to start: CAPSTAN_AUTH=off with CAPSTAN_API_HOST=0.0.0.0/);
    expect(() => checkApiBinding(cfg({ CAPSTAN_AUTH: 'off', CAPSTAN_API_HOST: '127.0.0.1' }))).not.toThrow();
    expect(() => checkApiBinding(cfg({ CAPSTAN_API_HOST: '0.0.0.0' }))).not.toThrow();
  });
});
