// Promotion that cannot be side-stepped, against a real stack (Temporal dev server, workers, the
// API over HTTP), by role: a model name belongs to a token, not to a pipeline name; production
// moves only by its owner or an admin, and a deploy stage's move passes champion/challenger
// unless an admin opted the model out; a decision acts with the rights of whoever decides.
// Small fixtures: a synthetic 8×8 dataset and two MLPs trained once (a strong one and a weak
// one), handed to the deploy stage by a test stage that copies them, so no run trains anything.
import { cp } from 'node:fs/promises';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workflowsPath } from '../../app/workers.js';
import { z } from 'zod';
import type { ArtifactStore } from '../../lib/artifacts.js';
import { loadTf } from '../../ml/backend.js';
import { StageError } from '../../lib/errors.js';
import { defineStage, PLUGIN_API_VERSION } from '../../plugins/contract.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';
import { makeDatasetArtifact, makeModelArtifact, tempStore } from '../models/fixtures.js';

let stack: TestStack;
let fixtures: { store: ArtifactStore; cleanup: () => Promise<void>; dataset: ArtifactRef; strong: ArtifactRef; weak: ArtifactRef };
let opA: string;
let opB: string;

/** Hands over a model trained beforehand (strong or weak) and its dataset, as pretrain and data prep would. */
const fixtureModelStage = defineStage({
  name: 'test:fixture-model',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'copies a model trained beforehand, and its dataset',
  paramsSchema: z.object({ which: z.enum(['strong', 'weak']), fail: z.boolean().default(false) }),
  consumes: [],
  produces: ['model', 'dataset'],
  resource: 'cpu',
  retry: { maximumAttempts: 1 },
  async run(ctx, params) {
    if (params.fail) throw new StageError('failing on purpose', { type: 'FIXTURE_FAILED' });
    const copy = (ref: ArtifactRef) => async (dir: string) => void (await cp(fixtures.store.resolve(ref), dir, { recursive: true }));
    const model = await ctx.output('model', copy(fixtures[params.which]));
    const dataset = await ctx.output('dataset', copy(fixtures.dataset));
    return { outputs: { model, dataset }, metrics: {} };
  },
});

beforeAll(async () => {
  const { tf } = await loadTf();
  const t = await tempStore();
  const dataset = await makeDatasetArtifact(t.store);
  const strong = await makeModelArtifact(tf, t.store, dataset, { runId: 'strong' });
  const weak = await makeModelArtifact(tf, t.store, dataset, { runId: 'weak', hidden: [2], epochs: 1 });
  fixtures = { store: t.store, cleanup: t.cleanup, dataset, strong, weak };
  stack = await startTestStack({ plugins: [fixtureModelStage, deployStage()] });
  opA = await stack.token('operator', 'op-a');
  opB = await stack.token('operator', 'op-b');
}, 120_000);
afterAll(async () => {
  await stack?.close();
  await fixtures?.cleanup();
});

const tokenId = (token: string) => token.split('_')[1]!;

interface Deploy {
  which: 'strong' | 'weak';
  /** The source stage fails (so the run pauses before the deploy stage). */
  failSource?: boolean;
  modelName: string;
  gates?: Record<string, unknown>;
  promote?: boolean;
  onFailure?: 'pause' | 'fail';
}
const spec = (name: string, d: Deploy) => ({
  name,
  stages: [
    { id: 'src', plugin: 'test:fixture-model', params: { which: d.which, ...(d.failSource ? { fail: true } : {}) } },
    {
      id: 'deploy',
      plugin: 'core:deploy',
      needs: ['src'],
      params: { modelName: d.modelName, latencyRuns: 10, gates: d.gates ?? { minTestAccuracy: 0 }, ...(d.promote === false ? { promote: false } : {}) },
    },
  ],
  onFailure: { action: d.onFailure ?? 'fail' },
});

const RUN = 'id status pausedStages stages { id status errorType error metrics } events { type stageId message }';

async function start(s: unknown, token = stack.adminToken): Promise<string> {
  const r = await stack.gql('mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }', { s }, token);
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.startPipeline.id;
}
const getRun = async (id: string) => (await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).data.run;
const until = (id: string, ok: (r: any) => boolean, what: string) =>
  waitFor(
    async () => {
      const r = await getRun(id);
      return ok(r) ? r : undefined;
    },
    `run ${id}: ${what}`,
    120_000,
  );
const closed = (id: string) => until(id, (r) => ['COMPLETED', 'FAILED'].includes(r.status), 'to close');
const deployOf = (run: any) => run.stages.find((s: any) => s.id === 'deploy');

/** Production version and version count of a model, as an admin reads them. */
async function production(name: string): Promise<{ production: number | null; versions: number }> {
  const m = (await stack.gql('query($n: String!) { model(name: $n) { production { version } versions { version } } }', { n: name })).data.model;
  return { production: m?.production?.version ?? null, versions: m?.versions.length ?? 0 };
}
const promote = (name: string, version: number, token: string) =>
  stack.gql('mutation($n: String!, $v: Int!) { promoteModel(name: $n, version: $v) { production { version } } }', { n: name, v: version }, token);
const rollback = (name: string, version: number, token: string) =>
  stack.gql('mutation($n: String!, $v: Int!) { rollbackModel(name: $n, version: $v) { production { version } } }', { n: name, v: version }, token);

describe('promotion cannot be side-stepped', () => {
  it("an operator's squatting spec (the owner's pipeline name, a trivial gate) leaves production where it was", async () => {
    const first = await closed(await start(spec('digits-default', { which: 'strong', modelName: 'digits' })));
    expect(first.status).toBe('COMPLETED');
    expect(await production('digits')).toEqual({ production: 1, versions: 1 });

    // The issue's attack, as text: the same pipeline name, the admin's model, minTestAccuracy 0, a worse model.
    const text = [
      'name: digits-default',
      'onFailure: { action: fail }',
      'stages:',
      '  - { id: src, plugin: "test:fixture-model", params: { which: weak } }',
      '  - { id: deploy, plugin: "core:deploy", needs: [src], params: { modelName: digits, latencyRuns: 10, gates: { minTestAccuracy: 0 } } }',
      '',
    ].join('\n');
    const r = await stack.gql('mutation($t: String!) { startPipelineFromText(text: $t) { id } }', { t: text }, opA);
    expect(r.errors).toBeUndefined();
    const squat = await closed(r.data.startPipelineFromText.id);
    expect(squat.status).toBe('FAILED');
    expect(deployOf(squat)).toMatchObject({ status: 'FAILED', errorType: 'MODEL_NAME_TAKEN' });
    expect(deployOf(squat).error).toContain('model name digits belongs to another token');
    expect(await production('digits')).toEqual({ production: 1, versions: 1 });

    // Nor by hand: promoteModel and rollbackModel need the owner (or an admin).
    for (const res of [await promote('digits', 1, opA), await rollback('digits', 1, opA)]) {
      expect(res.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
      expect(res.errors?.[0]?.message).toContain('belongs to another token');
    }
    // Who owns it is an admin's to read.
    const owner = await stack.gql('{ model(name: "digits") { owner { tokenId name pipeline runId since grantedBy } } }');
    expect(owner.data.model.owner).toMatchObject({
      tokenId: tokenId(stack.adminToken),
      name: 'test-admin',
      pipeline: 'digits-default',
      runId: first.id,
      grantedBy: null,
    });
    expect(Date.parse(owner.data.model.owner.since)).toBeGreaterThan(0);
    const asOperator = await stack.gql('{ model(name: "digits") { name owner { tokenId } } }', {}, opA);
    expect(asOperator.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('an operator who owns a model promotes and rolls it back; another operator may not, until an admin grants it', async () => {
    expect((await closed(await start(spec('op-pipe', { which: 'strong', modelName: 'op-digits' }), opA))).status).toBe('COMPLETED');
    expect((await closed(await start(spec('op-pipe', { which: 'weak', modelName: 'op-digits', promote: false }), opA))).status).toBe('COMPLETED');
    expect(await production('op-digits')).toEqual({ production: 1, versions: 2 });

    expect((await promote('op-digits', 2, opA)).data.promoteModel.production.version).toBe(2);
    expect((await rollback('op-digits', 1, opA)).data.rollbackModel.production.version).toBe(1);

    expect((await promote('op-digits', 2, opB)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const intruder = await closed(await start(spec('op-pipe', { which: 'weak', modelName: 'op-digits' }), opB));
    expect(deployOf(intruder).errorType).toBe('MODEL_NAME_TAKEN');
    expect(await production('op-digits')).toEqual({ production: 1, versions: 2 });

    // Granting is an admin's: an operator cannot give the name to themselves.
    const self = await stack.gql('mutation($t: String!) { setModelOwner(name: "op-digits", tokenId: $t) { tokenId } }', { t: tokenId(opB) }, opB);
    expect(self.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const grant = await stack.gql('mutation($t: String!) { setModelOwner(name: "op-digits", tokenId: $t) { tokenId name grantedBy } }', { t: tokenId(opB) });
    expect(grant.data.setModelOwner).toEqual({ tokenId: tokenId(opB), name: 'op-b', grantedBy: 'test-admin' });
    expect((await promote('op-digits', 2, opB)).data.promoteModel.production.version).toBe(2);
    expect((await promote('op-digits', 1, opA)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const unknown = await stack.gql('mutation { setModelOwner(name: "op-digits", tokenId: "000000000000") { tokenId } }');
    expect(unknown.errors?.[0]?.extensions?.code).toBe('BAD_ARGUMENT');
  });

  it('champion/challenger refuses a worse model even with a trivial gate, unless an admin opted the model out', async () => {
    expect((await closed(await start(spec('cc-pipe', { which: 'strong', modelName: 'cc-digits' }), opA))).status).toBe('COMPLETED');
    const worse = await closed(
      await start(spec('cc-pipe', { which: 'weak', modelName: 'cc-digits', gates: { minTestAccuracy: 0, noWorseThan: 'production', tolerance: 1 } }), opA),
    );
    expect(worse.status).toBe('FAILED');
    expect(deployOf(worse).errorType).toBe('PROMOTION_GATE_FAILED');
    // The spec's tolerance 1 is capped at the policy's 0.02.
    expect(deployOf(worse).error).toMatch(
      /noWorseThan production failed: test accuracy 0\.\d{4} < production version 1's 0\.\d{4} − tolerance 0\.02 on the same test set/,
    );
    expect(await production('cc-digits')).toEqual({ production: 1, versions: 2 });

    const policy =
      'mutation($r: Boolean!) { setModelPromotionPolicy(name: "cc-digits", requireChampionChallenger: $r) { name requireChampionChallenger maxTolerance setBy } }';
    expect((await stack.gql(policy, { r: false }, opA)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await stack.gql(policy, { r: false })).data.setModelPromotionPolicy).toEqual({
      name: 'cc-digits',
      requireChampionChallenger: false,
      maxTolerance: 0.02,
      setBy: 'test-admin',
    });
    const optedOut = await closed(await start(spec('cc-pipe', { which: 'weak', modelName: 'cc-digits' }), opA));
    expect(optedOut.status).toBe('COMPLETED');
    expect(deployOf(optedOut).metrics).toMatchObject({ promoted: true, championChallenger: 'opted out by test-admin' });
    expect(await production('cc-digits')).toEqual({ production: 3, versions: 3 });
    const read = await stack.gql('{ model(name: "cc-digits") { promotionPolicy { requireChampionChallenger setBy setAt } } }', {}, opA);
    expect(read.data.model.promotionPolicy).toMatchObject({ requireChampionChallenger: false, setBy: 'test-admin' });
    expect(Date.parse(read.data.model.promotionPolicy.setAt)).toBeGreaterThan(0);
  });

  it("a decision acts with the decider's rights: an operator's retry with new params on an admin's paused deploy stage ends in the owner refusal", async () => {
    // The admin's deploy claims the name, registers version 1, and misses an impossible gate: paused.
    const id = await start(spec('admin-pipe', { which: 'strong', modelName: 'admin-digits', gates: { maxSizeBytes: 1 }, onFailure: 'pause' }));
    await until(id, (r) => r.status === 'PAUSED', 'to pause on deploy');
    expect(await production('admin-digits')).toEqual({ production: null, versions: 1 });

    const params = { modelName: 'admin-digits', latencyRuns: 10, gates: { minTestAccuracy: 0 } };
    const retry = 'mutation($id: ID!, $p: JSON) { retryStage(runId: $id, stageId: "deploy", params: $p) { id } }';
    expect((await stack.gql(retry, { id, p: params }, opA)).errors).toBeUndefined();
    // Paused again on the refusal (with the admin's rights it would have completed and promoted).
    const refused = await until(
      id,
      (r) => r.status === 'COMPLETED' || (r.status === 'PAUSED' && deployOf(r).errorType !== 'PROMOTION_GATE_FAILED'),
      'the retry to end',
    );
    expect(refused.status).toBe('PAUSED');
    expect(deployOf(refused).errorType).toBe('MODEL_NAME_TAKEN');
    expect(await production('admin-digits')).toEqual({ production: null, versions: 1 });
    const messages = refused.events.map((e: any) => `${e.type} ${e.message ?? ''}`);
    expect(messages).toContain('RUN_RESUMED stage deploy retried by op-a (operator); stages that start from here on act as op-a (operator)');
    expect(messages).toContain('STAGE_STARTED operator retry 1 as op-a (operator)');

    // The same decision by an admin runs with an admin's rights.
    expect((await stack.gql(retry, { id, p: params })).errors).toBeUndefined();
    const done = await closed(id);
    expect(done.status).toBe('COMPLETED');
    expect(done.events.map((e: any) => `${e.type} ${e.message ?? ''}`)).toContain('RUN_RESUMED stage deploy retried by test-admin (admin)');
    expect(await production('admin-digits')).toEqual({ production: 1, versions: 1 });
    // Its history, decisions with `by` and all, replays on the current workflow code.
    await Worker.runReplayHistory({ workflowsPath, replayName: 'promotion-decisions' }, await stack.client.workflow.getHandle(id).fetchHistory());
  });

  it("an operator's new params upstream reach the admin's deploy stage with the operator's rights, not the admin's", async () => {
    expect((await closed(await start(spec('chain-pipe', { which: 'strong', modelName: 'admin-chain' })))).status).toBe('COMPLETED');
    const id = await start(spec('chain-pipe', { which: 'strong', failSource: true, modelName: 'admin-chain', onFailure: 'pause' }));
    await until(id, (r) => r.status === 'PAUSED', 'to pause on the source stage');
    // The operator swaps the source for a worse model; the admin's deploy stage then runs as the operator.
    expect(
      (await stack.gql('mutation($id: ID!) { retryStage(runId: $id, stageId: "src", params: { which: "weak" }) { id } }', { id }, opA)).errors,
    ).toBeUndefined();
    const after = await until(id, (r) => r.status !== 'RUNNING' && r.stages.find((s: any) => s.id === 'src').status === 'SUCCEEDED', 'the deploy stage to end');
    expect(after.status).toBe('PAUSED');
    expect(deployOf(after).errorType).toBe('MODEL_NAME_TAKEN');
    expect(await production('admin-chain')).toEqual({ production: 1, versions: 1 });
  });

  it('a skip is recorded with who decided', async () => {
    const id = await start(spec('admin-pipe', { which: 'strong', modelName: 'admin-digits', gates: { maxSizeBytes: 1 }, onFailure: 'pause' }));
    await until(id, (r) => r.status === 'PAUSED', 'to pause on deploy');
    expect((await stack.gql('mutation($id: ID!) { skipStage(runId: $id, stageId: "deploy") { id } }', { id }, opA)).errors).toBeUndefined();
    const done = await closed(id);
    expect(done.status).toBe('COMPLETED');
    expect(done.events.map((e: any) => `${e.type} ${e.message ?? ''}`)).toContain('RUN_RESUMED stage deploy skipped by op-a (operator)');
  });
});
