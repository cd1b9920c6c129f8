import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type * as TF from '@tensorflow/tfjs';
import type { Api } from '../../api/app.js';
import type { ArtifactStore } from '../../lib/artifacts.js';
import type { Db } from '../../lib/db/types.js';
import { loadTf } from '../../ml/backend.js';
import { inputsOf, readDataset } from '../../ml/data/dataset.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import { createModelServer, toBatch, type ModelServer } from '../../serving/model-server.js';
import { ModelRegistry } from '../../serving/registry.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { freshRegistryDb } from './db.js';
import { serveModelsApi } from './models-api.js';
import { makeDatasetArtifact, makeModelArtifact, stageContext, tempStore } from './fixtures.js';

let tf: typeof TF;
let store: ArtifactStore;
let cleanup: () => Promise<void>;
let db: Db;
let registry: ModelRegistry;
let dataset: ArtifactRef;
let api: Api;
let modelServer: ModelServer;
let closeHttp: () => Promise<void>;
let base: string;
let samples: number[][];
const booked: { model: string; version: number; count: number }[] = [];

async function predict(name: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}/models/${name}/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function gql(query: string, variables: Record<string, unknown> = {}): Promise<any> {
  const res = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  return res.json();
}

async function deploy(runId: string, model: ArtifactRef, promote: boolean): Promise<number> {
  const plugin = deployStage();
  const r = await plugin.run(
    stageContext(store, { runId, stageId: 'deploy', services: { models: registry } }),
    plugin.paramsSchema.parse({ modelName: 'digits', promote, latencyRuns: 20, gates: { minTestAccuracy: 0.2 } }),
    { model, dataset },
  );
  return r.metrics.version as number;
}

beforeAll(async () => {
  ({ tf } = await loadTf());
  const t = await tempStore();
  store = t.store;
  cleanup = t.cleanup;
  db = await freshRegistryDb('sqlite', t.root);
  registry = new ModelRegistry(db);
  dataset = await makeDatasetArtifact(store);
  const a = await makeModelArtifact(tf, store, dataset, { runId: 'a' });
  const b = await makeModelArtifact(tf, store, dataset, { runId: 'b', hidden: [32], epochs: 2 });
  expect(await deploy('run-a', a, true)).toBe(1);
  expect(await deploy('run-b', b, false)).toBe(2);
  const ds = await readDataset(store.resolve(dataset), { splits: ['train', 'test'] });
  const x = inputsOf(ds, ds.splits.test!);
  samples = Array.from({ length: 20 }, (_, i) => Array.from(x.subarray(i * 64, (i + 1) * 64)));

  modelServer = createModelServer({
    registry,
    artifacts: store,
    refreshIntervalMs: 0,
    onPredictions: (model, version, count) => void booked.push({ model, version, count }),
  });
  const served = await serveModelsApi({ db, models: registry, modelServer: modelServer });
  ({ api, url: base } = served);
  closeHttp = served.close;
}, 120_000);

afterAll(async () => {
  await closeHttp();
  await modelServer.close();
  await db.close();
  await cleanup();
});

describe('POST /models/:name/predict', () => {
  it('answers with the production version, a label and class probabilities per sample', async () => {
    const { status, json } = await predict('digits', { inputs: samples.slice(0, 3) });
    expect(status).toBe(200);
    expect(json.model).toBe('digits');
    expect(json.version).toBe(1);
    expect(json.predictions).toHaveLength(3);
    for (const p of json.predictions) {
      expect(p.probabilities).toHaveLength(10);
      expect(p.probabilities.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 4);
      expect(p.label).toBe(p.probabilities.indexOf(Math.max(...p.probabilities)));
    }
  });

  it('accepts samples nested as the model input shape (8×8)', async () => {
    const nested = samples.slice(0, 2).map((s) => Array.from({ length: 8 }, (_, r) => s.slice(r * 8, r * 8 + 8)));
    const flat = await predict('digits', { inputs: samples.slice(0, 2) });
    const { status, json } = await predict('digits', { inputs: nested });
    expect(status).toBe(200);
    expect(json.predictions.map((p: { label: number }) => p.label)).toEqual(flat.json.predictions.map((p: { label: number }) => p.label));
  });

  it('rejects bad requests with a clear 400, unknown models with 404', async () => {
    const short = await predict('digits', { inputs: [samples[0], samples[1]!.slice(0, 63)] });
    expect(short.status).toBe(400);
    expect(short.json.error.code).toBe('BAD_INPUT');
    expect(short.json.error.message).toBe('inputs[1] has shape [63]; model digits v1 expects [8, 8] (or 64 flat numbers)');
    const ragged = await predict('digits', { inputs: [[[1, 2], [3]]] });
    expect(ragged.json.error.message).toContain('inputs[0] is ragged');
    const text = await predict('digits', { inputs: [['a']] });
    expect(text.status).toBe(400);
    expect(text.json.error.message).toContain('inputs[0][0] must be a number or a list, got string');
    expect((await predict('digits', { inputs: [] })).json.error.message).toContain('empty');
    expect((await predict('digits', { samples: [] })).json.error.message).toContain('"inputs"');
    expect((await predict('digits', '{not json')).status).toBe(400);
    const unknown = await predict('nope', { inputs: samples.slice(0, 1) });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error).toEqual({ code: 'MODEL_NOT_FOUND', message: 'unknown model nope' });
    const get = await fetch(`${base}/models/digits/predict`);
    expect(get.status).toBe(405);
  });
});

describe('GraphQL', () => {
  it('lists models with versions, metrics and aliases, and predicts', async () => {
    const r = await gql(
      `{ models { name servingVersion production { version } versions { version runId testAccuracy p99LatencyMs aliases metrics } aliases { alias version } } }`,
    );
    expect(r.errors).toBeUndefined();
    const digits = r.data.models.find((m: { name: string }) => m.name === 'digits');
    expect(digits.production.version).toBe(1);
    expect(digits.versions.map((v: { version: number }) => v.version)).toEqual([2, 1]);
    expect(digits.versions[1].aliases).toEqual(['production']);
    expect(typeof digits.versions[1].testAccuracy).toBe('number');
    expect(digits.versions[1].metrics.tfBackend).toBeTypeOf('string');
    expect(digits.aliases).toEqual([{ alias: 'production', version: 1 }]);

    const p = await gql(`query($i: [[Float!]!]!) { predict(model: "digits", inputs: $i) { model version predictions { label probabilities } } }`, {
      i: samples.slice(0, 2),
    });
    expect(p.errors).toBeUndefined();
    expect(p.data.predict.version).toBe(1);
    expect(p.data.predict.predictions).toHaveLength(2);

    const bad = await gql(`{ predict(model: "digits", inputs: [[1, 2]]) { version } }`);
    expect(bad.errors[0].extensions.code).toBe('BAD_INPUT');
    const missing = await gql(`{ model(name: "nope") { name } }`);
    expect(missing.data.model).toBeNull();
  });

  it('promotes without dropping requests in flight, then rolls back in one call', async () => {
    const before = booked.reduce((n, b) => n + b.count, 0);
    // Many requests over real HTTP while production moves from v1 to v2.
    const inflight = Array.from({ length: 150 }, (_, i) => predict('digits', { inputs: [samples[i % samples.length]] }));
    const promoted = gql(`mutation { promoteModel(name: "digits", version: 2) { servingVersion production { version } } }`);
    const more = Array.from({ length: 150 }, (_, i) => predict('digits', { inputs: [samples[i % samples.length]] }));
    const [results, p, results2] = await Promise.all([Promise.all(inflight), promoted, Promise.all(more)]);
    expect(p.errors).toBeUndefined();
    expect(p.data.promoteModel).toEqual({ servingVersion: 2, production: { version: 2 } });
    const all = [...results, ...results2];
    expect(all.filter((r) => r.status !== 200)).toEqual([]);
    const byVersion = all.reduce<Record<number, number>>((acc, r) => {
      acc[r.json.version] = (acc[r.json.version] ?? 0) + 1;
      return acc;
    }, {});
    expect(Object.keys(byVersion).every((v) => v === '1' || v === '2')).toBe(true);
    console.info('[swap] answers per version during promotion:', JSON.stringify(byVersion));
    const after = await predict('digits', { inputs: [samples[0]] });
    expect(after.json.version).toBe(2);
    expect(api.deps.modelServer.served()).toMatchObject([{ model: 'digits', version: 2 }]);

    // Every answered prediction reached the ledger hook, booked to the version that answered it.
    const newBookings = booked.reduce((n, b) => n + b.count, 0) - before;
    expect(newBookings).toBe(301);
    expect(booked.every((b) => b.model === 'digits' && (b.version === 1 || b.version === 2))).toBe(true);

    const rb = await gql(
      `mutation { rollbackModel(name: "digits", version: 1) { servingVersion production { version } productionHistory { version previousVersion reason } } }`,
    );
    expect(rb.errors).toBeUndefined();
    expect(rb.data.rollbackModel.servingVersion).toBe(1);
    expect(rb.data.rollbackModel.production.version).toBe(1);
    expect(rb.data.rollbackModel.productionHistory.map((h: { reason: string }) => h.reason)).toEqual([
      expect.stringMatching(/^deploy /),
      'promote',
      'rollback',
    ]);
    expect((await predict('digits', { inputs: [samples[0]] })).json.version).toBe(1);

    const forward = await gql(`mutation { rollbackModel(name: "digits", version: 2) { servingVersion } }`);
    expect(forward.errors[0].extensions.code).toBe('BAD_ROLLBACK');
    const missing = await gql(`mutation { promoteModel(name: "digits", version: 9) { servingVersion } }`);
    expect(missing.errors[0].extensions.code).toBe('VERSION_NOT_FOUND');
  }, 60_000);
});

describe('model server', () => {
  it('flattens flat or nested samples and names the sample that does not fit', () => {
    const entry = { model: 'm', version: 3, sampleShape: [2, 2, 1], sampleSize: 4 };
    expect(
      Array.from(
        toBatch(
          [
            [1, 2, 3, 4],
            [
              [5, 6],
              [7, 8],
            ],
            [
              [[9], [10]],
              [[11], [12]],
            ],
          ],
          entry,
          10,
        ).values,
      ),
    ).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(() => toBatch([[1, 2, 3]], entry, 10)).toThrow('inputs[0] has shape [3]; model m v3 expects [2, 2, 1] (or 4 flat numbers)');
    expect(() =>
      toBatch(
        [
          [
            [1, 2, 3],
            [4, 5, 6],
          ],
        ],
        entry,
        10,
      ),
    ).toThrow('inputs[0] has shape [2, 3]');
    expect(() =>
      toBatch(
        [
          [1, 2, 3, 4],
          [1, 2, 3, 4],
        ],
        entry,
        1,
      ),
    ).toThrow('at most 1 per request');
    expect(() => toBatch({ a: 1 }, entry, 10)).toThrow('"inputs" must be a list of samples');
    expect(() => toBatch([[1, null, 3, 4]], entry, 10)).toThrow('inputs[0][1] must be a number or a list, got null');
  });

  it('notices an alias moved elsewhere (periodic check) and swaps; counts per version', async () => {
    const s = createModelServer({ registry, artifacts: store, refreshIntervalMs: 50 });
    try {
      await registry.setAlias('digits', 'production', 1, 'test');
      expect((await s.predict('digits', [samples[0]])).version).toBe(1);
      // As a deploy stage in a worker process would: move the alias in the database only.
      await registry.setAlias('digits', 'production', 2, 'test');
      await vi.waitFor(() => expect(s.served()).toMatchObject([{ model: 'digits', version: 2 }]), { timeout: 10_000, interval: 20 });
      expect((await s.predict('digits', [samples[0], samples[1]])).version).toBe(2);
      expect(s.predictionCounts()).toEqual({ digits: { 1: 1, 2: 2 } });
      expect(await s.rollback('digits', 1)).toEqual({ from: 2, to: 1 });
      expect(s.served()).toMatchObject([{ model: 'digits', version: 1, inFlight: 0 }]);
    } finally {
      await s.close();
    }
  });

  it('refuses to serve a registered artifact whose files changed', async () => {
    const { writeFile } = await import('node:fs/promises');
    const path = await import('node:path');
    const v2 = (await registry.getVersion('digits', 2))!;
    const s = createModelServer({ registry, artifacts: store });
    const file = path.join(store.resolve(v2.artifactUri), 'weights.bin');
    const { readFile } = await import('node:fs/promises');
    const original = await readFile(file);
    try {
      await registry.setAlias('digits', 'production', 2, 'test');
      await writeFile(file, Buffer.concat([original, Buffer.from([0])]));
      await expect(s.predict('digits', [samples[0]])).rejects.toMatchObject({
        code: 'MODEL_UNAVAILABLE',
        message: expect.stringContaining('fails its hash check'),
      });
    } finally {
      await writeFile(file, original);
      await registry.setAlias('digits', 'production', 1, 'test');
      await s.close();
    }
  });
});
