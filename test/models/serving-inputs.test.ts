// The model server checks inputs against the input spec the deploy stage recorded (shape, value
// range, raw encoding), and keeps a bounded, least-recently-used set of models loaded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as TF from '@tensorflow/tfjs';
import type { ArtifactStore } from '../../lib/artifacts.js';
import type { Db } from '../../lib/db/types.js';
import { loadTf } from '../../ml/backend.js';
import { inputsOf, readDataset } from '../../ml/data/dataset.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import { createModelServer, ServingError, type ModelServer } from '../../serving/model-server.js';
import { ModelRegistry } from '../../serving/registry.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { freshRegistryDb } from './db.js';
import { serveModelsApi } from './models-api.js';
import { makeDatasetArtifact, makeModelArtifact, makePixelDatasetArtifact, stageContext, tempStore } from './fixtures.js';

let tf: typeof TF;
let store: ArtifactStore;
let cleanup: () => Promise<void>;
let db: Db;
let registry: ModelRegistry;
let server: ModelServer;
let closeHttp: () => Promise<void>;
let base: string;
/** Raw 0–255 pixel samples of the pixel dataset's test split. */
let rawPixels: number[][];
/** Normalised (z-scored) samples of the feature dataset's test split, and the same raw. */
let zSamples: number[][];
let zRaw: number[][];

async function deploy(name: string, runId: string, model: ArtifactRef, dataset: ArtifactRef): Promise<void> {
  const plugin = deployStage();
  const ctx = stageContext(store, { runId, stageId: 'deploy', pipeline: 'serving-inputs', services: { models: registry } });
  await plugin.run(ctx, plugin.paramsSchema.parse({ modelName: name, latencyRuns: 10, gates: { minTestAccuracy: 0.3 } }), { model, dataset });
}

async function post(name: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}/models/${name}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

async function gql(query: string, variables: Record<string, unknown> = {}): Promise<any> {
  const res = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  return res.json();
}

async function refusal(p: Promise<unknown>): Promise<ServingError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ServingError);
  expect((e as ServingError).code).toBe('BAD_INPUT');
  return e as ServingError;
}

beforeAll(async () => {
  ({ tf } = await loadTf());
  const t = await tempStore();
  store = t.store;
  cleanup = t.cleanup;
  db = await freshRegistryDb('sqlite', t.root);
  registry = new ModelRegistry(db);

  const pixels = await makePixelDatasetArtifact(store);
  await deploy('pixels', 'run-p', await makeModelArtifact(tf, store, pixels, { runId: 'p' }), pixels);
  const pds = await readDataset(store.resolve(pixels), { splits: ['train', 'test'] });
  const px = pds.splits.test!.x as Uint8Array;
  rawPixels = Array.from({ length: 10 }, (_, i) => Array.from(px.subarray(i * 64, (i + 1) * 64)));

  const features = await makeDatasetArtifact(store);
  await deploy('features', 'run-f', await makeModelArtifact(tf, store, features, { runId: 'f' }), features);
  const fds = await readDataset(store.resolve(features), { splits: ['train', 'test'] });
  const fx = inputsOf(fds, fds.splits.test!);
  zSamples = Array.from({ length: 10 }, (_, i) => Array.from(fx.subarray(i * 64, (i + 1) * 64)));
  const norm = fds.normalization;
  if (norm.kind !== 'zscore') throw new Error('expected a z-scored dataset');
  zRaw = zSamples.map((s) => s.map((z, j) => z * norm.std[j]! + norm.mean[j]!));

  server = createModelServer({ registry, artifacts: store });
  const served = await serveModelsApi({ db, models: registry, modelServer: server });
  base = served.url;
  closeHttp = served.close;
}, 120_000);

afterAll(async () => {
  await closeHttp();
  await server.close();
  await db.close();
  await cleanup();
});

describe('input spec: range check and raw encoding', () => {
  it('deploy recorded how the pixels were normalised', async () => {
    expect((await registry.getVersion('pixels', 1))?.inputSpec).toEqual({
      shape: [8, 8],
      dtype: 'float32',
      range: [0, 1],
      describe: 'normalised pixels',
      raw: { kind: 'scale', scale: 1 / 255, rawRange: [0, 255], describe: 'raw 0–255 pixels' },
    });
  });

  it('refuses raw pixels sent as normalised values, saying what was expected (HTTP 400, GraphQL BAD_INPUT)', async () => {
    const e = await refusal(server.predict('pixels', [rawPixels[0]!.map(() => 255)]));
    expect(e.status).toBe(400);
    expect(e.message).toBe(
      'inputs[0] at flat index 0 is 255, but values must be in [0, 1] (normalised pixels) for model pixels v1; send raw 0–255 pixels with "encoding": "raw"',
    );
    const viaHttp = await post('pixels', { inputs: [rawPixels[0]] });
    expect(viaHttp.status).toBe(400);
    expect(viaHttp.json.error.code).toBe('BAD_INPUT');
    expect(viaHttp.json.error.message).toMatch(
      /^inputs\[0\] at flat index \d+ is \d+, but values must be in \[0, 1\] \(normalised pixels\) for model pixels v1; send raw 0–255 pixels with "encoding": "raw"$/,
    );
    const viaGql = await gql(`query($i: [[Float!]!]!) { predict(model: "pixels", inputs: $i) { version } }`, { i: [rawPixels[0]] });
    expect(viaGql.errors[0].extensions.code).toBe('BAD_INPUT');
    expect(viaGql.errors[0].message).toContain('send raw 0–255 pixels with "encoding": "raw"');
    await refusal(server.predict('pixels', [rawPixels[0]!.map(() => -0.01)]));
  });

  it('accepts raw 0–255 pixels when the request says so: the same answers as the normalised pixels', async () => {
    const normalised = rawPixels.map((s) => s.map((v) => v / 255));
    const a = await server.predict('pixels', normalised);
    const b = await server.predict('pixels', rawPixels, { encoding: 'raw' });
    expect(b.predictions.map((p) => p.label)).toEqual(a.predictions.map((p) => p.label));
    b.predictions.forEach((p, i) => p.probabilities.forEach((q, c) => expect(q).toBeCloseTo(a.predictions[i]!.probabilities[c]!, 5)));
    const viaHttp = await post('pixels', { inputs: rawPixels.slice(0, 2), encoding: 'raw' });
    expect(viaHttp.status).toBe(200);
    expect(viaHttp.json.predictions.map((p: { label: number }) => p.label)).toEqual(a.predictions.slice(0, 2).map((p) => p.label));
    const viaGql = await gql(`query($i: [[Float!]!]!) { predict(model: "pixels", inputs: $i, encoding: RAW) { predictions { label } } }`, {
      i: rawPixels.slice(0, 2),
    });
    expect(viaGql.errors).toBeUndefined();
    expect(viaGql.data.predict.predictions.map((p: { label: number }) => p.label)).toEqual(a.predictions.slice(0, 2).map((p) => p.label));
    // Raw values must be raw pixels.
    const e = await refusal(server.predict('pixels', [rawPixels[0]!.map((v, j) => (j === 5 ? 300 : v))], { encoding: 'raw' }));
    expect(e.message).toBe('inputs[0] at flat index 5 is 300, but with "encoding": "raw" values must be in [0, 255] (raw 0–255 pixels) for model pixels v1');
    const bad = await post('pixels', { inputs: rawPixels.slice(0, 1), encoding: 'pixels' });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toContain('"encoding" must be "normalized"');
  });

  it('z-scored features: accepts the training range, refuses far-off values, maps raw feature values', async () => {
    const spec = (await registry.getVersion('features', 1))!.inputSpec!;
    expect(spec).toMatchObject({ describe: 'z-scored features', raw: { kind: 'zscore' } });
    const a = await server.predict('features', zSamples);
    const e = await refusal(server.predict('features', [zSamples[0]!.map((v, j) => (j === 3 ? 1e4 : v))]));
    expect(e.message).toMatch(
      /^inputs\[0\] at flat index 3 is 10000, but values must be in \[-?[\d.]+, [\d.]+\] \(z-scored features\) for model features v1; send raw feature values with "encoding": "raw"$/,
    );
    const b = await server.predict('features', zRaw, { encoding: 'raw' });
    expect(b.predictions.map((p) => p.label)).toEqual(a.predictions.map((p) => p.label));
    const far = await refusal(server.predict('features', [zRaw[0]!.map((v, j) => (j === 0 ? v + 1e6 : v))], { encoding: 'raw' }));
    expect(far.message).toMatch(
      /^inputs\[0\] at flat index 0 normalises to [\d.e+]+, but values must be in .* \(z-scored features\) for model features v1: the sample is far outside the data the model was trained on$/,
    );
  });

  it('serves versions registered before input specs were recorded without a range check, and refuses raw for them', async () => {
    const v1 = (await registry.getVersion('pixels', 1))!;
    const { version: old } = await registry.register({
      model: 'legacy',
      runId: 'old-run',
      stageId: 'deploy',
      artifactUri: v1.artifactUri,
      sha256: v1.sha256,
      bytes: v1.bytes,
      metrics: {},
    });
    await registry.setAlias('legacy', 'production', old.version);
    const r = await server.predict('legacy', [rawPixels[0]]);
    expect(r.predictions).toHaveLength(1);
    const e = await refusal(server.predict('legacy', [rawPixels[0]], { encoding: 'raw' }));
    expect(e.message).toBe(
      'model legacy v1 records no raw encoding (it was registered without an input spec, or its data needs none): send inputs as the model takes them, without "encoding": "raw"',
    );
  });
});

describe('bounded model cache', () => {
  async function names(n: number): Promise<string[]> {
    const v1 = (await registry.getVersion('pixels', 1))!;
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const name = `cached-${i}`;
      if (!(await registry.hasModel(name))) {
        await registry.register({
          model: name,
          runId: `c${i}`,
          stageId: 'deploy',
          artifactUri: v1.artifactUri,
          sha256: v1.sha256,
          bytes: v1.bytes,
          metrics: {},
          inputSpec: v1.inputSpec!,
        });
        await registry.setAlias(name, 'production', 1);
      }
      out.push(name);
    }
    return out;
  }
  const sample = () => [rawPixels[0]!.map((v) => v / 255)];

  it('keeps at most maxLoaded models, evicting the least recently used and disposing its tensors', async () => {
    const [m0, m1, m2] = (await names(3)) as [string, string, string];
    const baseline = tf.memory().numTensors;
    const s = createModelServer({ registry, artifacts: store, maxLoaded: 2 });
    try {
      await s.predict(m0, sample());
      const perModel = tf.memory().numTensors - baseline;
      expect(perModel).toBeGreaterThan(0);
      await s.predict(m1, sample());
      await s.predict(m0, sample()); // m0 is now the most recently used
      await s.predict(m2, sample()); // evicts m1
      expect(
        s
          .served()
          .map((e) => e.model)
          .sort(),
      ).toEqual([m0, m2].sort());
      expect(tf.memory().numTensors - baseline).toBe(2 * perModel);
      // An evicted model loads again on demand.
      expect((await s.predict(m1, sample())).version).toBe(1);
      expect(
        s
          .served()
          .map((e) => e.model)
          .sort(),
      ).toEqual([m1, m2].sort());
      expect(tf.memory().numTensors - baseline).toBe(2 * perModel);
    } finally {
      await s.close();
    }
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('never disposes a model under a request in flight: concurrent requests over more models than fit all succeed', async () => {
    const models = await names(4);
    const baseline = tf.memory().numTensors;
    const s = createModelServer({ registry, artifacts: store, maxLoaded: 1 });
    try {
      const results = await Promise.allSettled(Array.from({ length: 80 }, (_, i) => s.predict(models[i % models.length]!, sample())));
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      expect(s.served().length).toBe(1);
      expect(s.served()[0]!.inFlight).toBe(0);
    } finally {
      await s.close();
    }
    expect(tf.memory().numTensors).toBe(baseline);
  });
});
