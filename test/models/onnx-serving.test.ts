// ONNX in the registry, the deploy gates and the model server, on the real stack: tfjs and ONNX
// versions of one model name side by side, champion/challenger across formats, rollback, swaps
// under load, the same input checks, and the registry's figures checked with onnxruntime-node.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import type * as TF from '@tensorflow/tfjs';
import { StageError } from '../../lib/errors.js';
import type { ArtifactStore } from '../../lib/artifacts.js';
import type { Db } from '../../lib/db/types.js';
import { loadTf } from '../../ml/backend.js';
import { loadSplit } from '../../ml/evaluation/evaluate.js';
import { deployParamsSchema, deployStage, type GateResult } from '../../plugins/core/deploy/index.js';
import { createModelServer, ServingError, type ModelServer } from '../../serving/model-server.js';
import { ModelRegistry } from '../../serving/registry.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { freshRegistryDb } from './db.js';
import { serveModelsApi } from './models-api.js';
import { makeDatasetArtifact, makeModelArtifact, makeOnnxModelArtifact, makePixelDatasetArtifact, stageContext, tempStore } from './fixtures.js';

let tf: typeof TF;
let store: ArtifactStore;
let cleanup: () => Promise<void>;
let db: Db;
let registry: ModelRegistry;
let features: ArtifactRef;
let pixels: ArtifactRef;
let champion: ArtifactRef;
let weak: ArtifactRef;
let strong: ArtifactRef;
let strongOnnx: ArtifactRef;
let server: ModelServer;
let closeHttp: () => Promise<void>;
let base: string;
let samples: number[][];
let rawPixels: number[][];
const booked: { model: string; version: number; count: number }[] = [];
const ORT_RUNTIME = `onnxruntime-node ${ort.env.versions.node} (cpu)`;

function deploy(runId: string, params: Record<string, unknown>, model: ArtifactRef, dataset = features, name = 'digits') {
  const plugin = deployStage();
  const ctx = stageContext(store, { runId, stageId: 'deploy', pipeline: 'onnx-test', services: { models: registry } });
  return plugin.run(ctx, plugin.paramsSchema.parse({ modelName: name, latencyRuns: 20, ...params }), { model, dataset });
}

async function refused(p: Promise<unknown>): Promise<StageError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(StageError);
  return e as StageError;
}

async function post(name: string, body: unknown): Promise<{ status: number; json: any }> {
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

beforeAll(async () => {
  ({ tf } = await loadTf());
  const t = await tempStore();
  store = t.store;
  cleanup = t.cleanup;
  db = await freshRegistryDb('sqlite', t.root);
  registry = new ModelRegistry(db);
  features = await makeDatasetArtifact(store);
  pixels = await makePixelDatasetArtifact(store);
  champion = await makeModelArtifact(tf, store, features, { runId: 'champion', hidden: [16], epochs: 2 });
  weak = await makeModelArtifact(tf, store, features, { runId: 'weak', hidden: [2], epochs: 1 });
  strong = await makeModelArtifact(tf, store, features, { runId: 'strong', hidden: [128], epochs: 6 });
  // An ONNX folder handed over as an exporter outside Capstan would (model.onnx + capstan-model.json).
  const test = await loadSplit(store.resolve(features), { split: 'test' });
  samples = Array.from({ length: 20 }, (_, i) => Array.from(test.x.subarray(i * 64, (i + 1) * 64)));
  const { readDataset } = await import('../../ml/data/dataset.js');
  const fds = await readDataset(store.resolve(features), { splits: ['train'] });
  if (fds.normalization.kind !== 'zscore') throw new Error('expected z-scored features');
  strongOnnx = await makeOnnxModelArtifact(tf, store, strong, {
    runId: 'strong',
    encoding: { kind: 'zscore', mean: fds.normalization.mean, std: fds.normalization.std },
  });
  const pds = await readDataset(store.resolve(pixels), { splits: ['train', 'test'] });
  rawPixels = Array.from({ length: 10 }, (_, i) => Array.from((pds.splits.test!.x as Uint8Array).subarray(i * 64, (i + 1) * 64)));

  server = createModelServer({
    registry,
    artifacts: store,
    refreshIntervalMs: 0,
    onPredictions: (model, version, count) => void booked.push({ model, version, count }),
  });
  const served = await serveModelsApi({ db, models: registry, modelServer: server });
  base = served.url;
  closeHttp = served.close;
}, 180_000);

afterAll(async () => {
  await closeHttp();
  await server.close();
  await db.close();
  await cleanup();
});

describe('deploy gates across formats', () => {
  it('a tfjs champion is version 1; a worse ONNX challenger is registered as ONNX but refused by noWorseThan: production', async () => {
    const first = await deploy('run-1', { gates: { noWorseThan: 'production' } }, champion);
    expect(first.metrics).toMatchObject({
      version: 1,
      promoted: true,
      format: 'tfjs-layers',
      runtime: expect.stringMatching(/^tfjs 4\.22\.0 \((wasm|node|cpu)\)$/),
    });

    const e = await refused(deploy('run-2', { format: 'onnx', gates: { noWorseThan: 'production' } }, weak));
    expect(e.type).toBe('PROMOTION_GATE_FAILED');
    expect(e.message).toMatch(
      /^model digits version 2 is registered but not promoted: noWorseThan production failed: test accuracy 0\.\d{4} < production version 1's 0\.\d{4} on the same test set$/,
    );
    const gate = (e.details!.gates as GateResult[])[0]!;
    expect(gate).toMatchObject({ productionVersion: 1, productionTestAccuracy: first.metrics.testAccuracy });
    expect(e.details).toMatchObject({ format: 'onnx', runtime: ORT_RUNTIME, weightFormat: 'float32' });
    const v2 = (await registry.getVersion('digits', 2))!;
    expect(v2.format).toBe('onnx');
    expect((await registry.resolveAlias('digits'))?.version).toBe(1);
  });

  it('a better ONNX model (a folder as an exporter hands it over) is measured through ONNX Runtime, compared with the tfjs champion and promoted', async () => {
    const r = await deploy('run-3', { gates: { noWorseThan: 'production', minTestAccuracy: 0.3, maxP99LatencyMs: 60_000 } }, strongOnnx);
    const m = r.metrics;
    expect(m).toMatchObject({
      version: 3,
      promoted: true,
      format: 'onnx',
      runtime: ORT_RUNTIME,
      productionVersion: 1,
      noWorseThanPassed: true,
      weightFormat: 'float32',
      evalSplit: 'test',
    });
    expect(m.testAccuracy as number).toBeGreaterThan(m.productionTestAccuracy as number);
    expect(m.tfBackend).toBeUndefined();
    console.info(
      `[onnx] champion tfjs v1 ${(m.productionTestAccuracy as number).toFixed(4)} → challenger ONNX v3 ${(m.testAccuracy as number).toFixed(4)}; p50/p99 ${m.p50LatencyMs}/${m.p99LatencyMs} ms, ${m.sizeBytes} B`,
    );
    const v3 = (await registry.resolveAlias('digits'))!;
    expect(v3).toMatchObject({ version: 3, format: 'onnx' });
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(store.resolve(v3.artifactUri))).sort()).toEqual(['capstan-model.json', 'model.onnx']);
    expect(await store.verify({ kind: 'model', uri: v3.artifactUri, sha256: v3.sha256, bytes: v3.bytes })).toEqual({ ok: true });
  });

  it('ONNX Runtime on its own scores what the registry says on the test rows (±0.1 point)', async () => {
    const v3 = (await registry.getVersion('digits', 3))!;
    const test = await loadSplit(store.resolve(features), { split: 'test' });
    const session = await ort.InferenceSession.create(path.join(store.resolve(v3.artifactUri), 'model.onnx'));
    try {
      const out = await session.run({ input: new ort.Tensor('float32', test.x, [test.count, 8, 8]) });
      const p = out.probabilities!.data as Float32Array;
      let correct = 0;
      for (let i = 0; i < test.count; i++) {
        const row = Array.from(p.subarray(i * 10, i * 10 + 10));
        if (row.indexOf(Math.max(...row)) === test.y[i]) correct++;
      }
      expect(Math.abs(correct / test.count - (v3.metrics.testAccuracy as number))).toBeLessThanOrEqual(0.001);
    } finally {
      await session.release();
    }
  });

  it('uint8 ONNX (DequantizeLinear weights) is smaller than float32 and about as accurate', async () => {
    const r = await deploy('run-4', { format: 'onnx', quantize: 'uint8', promote: false }, strong);
    const float = (await registry.getVersion('digits', 3))!;
    expect(r.metrics).toMatchObject({ version: 4, format: 'onnx', weightFormat: 'uint8', promoted: false });
    expect(r.metrics.sizeBytes as number).toBeLessThan(float.bytes / 2);
    expect(Math.abs((r.metrics.testAccuracy as number) - (float.metrics.testAccuracy as number))).toBeLessThan(0.03);
    console.info(
      `[onnx] float32 ${float.bytes} B ${(float.metrics.testAccuracy as number).toFixed(4)} vs uint8 ${r.metrics.sizeBytes} B ${(r.metrics.testAccuracy as number).toFixed(4)}`,
    );
  });

  it('refuses what cannot be deployed before any work, with a code', async () => {
    expect(deployParamsSchema.safeParse({ format: 'onnx', quantize: 'float16' }).error?.issues[0]?.message).toBe(
      'ONNX models are quantized to uint8 or not at all: use quantize none or uint8 with format onnx',
    );
    expect((await refused(deploy('run-x1', { format: 'tfjs-layers', promote: false }, strongOnnx))).type).toBe('CONVERSION_UNSUPPORTED');
    expect((await refused(deploy('run-x2', { quantize: 'uint8', promote: false }, strongOnnx))).message).toContain('does not re-quantize ONNX graphs');
    // An ONNX model trained on 0–255 pixels scaled by 1/255, measured on z-scored features.
    const pixelOnnx = await makeOnnxModelArtifact(tf, store, strong, { runId: 'px', encoding: { kind: 'scale', scale: 1 / 255, rawRange: [0, 255] } });
    await expect(deploy('run-x3', { promote: false }, pixelOnnx)).rejects.toMatchObject({
      code: 'MODEL_DATASET_MISMATCH',
      message: expect.stringContaining('trained on inputs scaled by 0.00392'),
    });
    const bare = await store.freshDir(store.dirFor('bare', 'export', 'model'));
    await mkdir(bare, { recursive: true });
    await writeFile(path.join(bare, 'model.onnx'), new Uint8Array([8, 8]));
    await expect(deploy('run-x4', { promote: false }, await store.seal('model', bare))).rejects.toMatchObject({ code: 'MODEL_FORMAT_UNKNOWN' });
    // A tfjs model with a layer the converter does not know.
    const { saveModel } = await import('../../ml/models/io.js');
    const odd = tf.sequential({
      layers: [
        tf.layers.flatten({ inputShape: [8, 8] }),
        tf.layers.batchNormalization({ name: 'norm' }),
        tf.layers.dense({ units: 10, activation: 'softmax' }),
      ],
    });
    const oddDir = await store.freshDir(store.dirFor('odd', 'pretrain', 'model'));
    await saveModel(odd, oddDir);
    odd.dispose();
    await expect(deploy('run-x5', { format: 'onnx', promote: false }, await store.seal('model', oddDir))).rejects.toMatchObject({
      code: 'ONNX_EXPORT_UNSUPPORTED',
      message: expect.stringContaining('layer norm: BatchNormalization layers do not convert'),
    });
    expect((await registry.listVersions('digits')).map((v) => v.version)).toEqual([4, 3, 2, 1]);
  });
});

describe('serving ONNX', () => {
  it('predicts with the ONNX production version over REST and GraphQL, books each prediction, and shows format and runtime', async () => {
    const before = booked.length;
    const { status, json } = await post('digits', { inputs: samples.slice(0, 3) });
    expect(status).toBe(200);
    expect(json.version).toBe(3);
    for (const p of json.predictions) {
      expect(p.probabilities).toHaveLength(10);
      expect(p.probabilities.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 4);
    }
    // ONNX versions name their classes (capstan-model.json labels: "0"…"9" from the converter).
    for (const p of json.predictions) expect(p.className).toBe(String(p.label));
    expect(booked.slice(before)).toEqual([{ model: 'digits', version: 3, count: 3 }]);
    expect(server.served()).toMatchObject([{ model: 'digits', version: 3, format: 'onnx', runtime: ORT_RUNTIME, sampleShape: [8, 8] }]);
    const r = await gql(
      `{ model(name: "digits") { servingVersion servingRuntime production { version format runtime } versions { version format runtime metrics } } }`,
    );
    expect(r.errors).toBeUndefined();
    expect(r.data.model).toMatchObject({ servingVersion: 3, servingRuntime: ORT_RUNTIME, production: { version: 3, format: 'ONNX', runtime: ORT_RUNTIME } });
    expect(r.data.model.versions.map((v: { format: string }) => v.format)).toEqual(['ONNX', 'ONNX', 'ONNX', 'TFJS_LAYERS']);
    expect(r.data.model.versions[3].runtime).toMatch(/^tfjs 4\.22\.0/);
    expect(r.data.model.versions[0].metrics.weightFormat).toBe('uint8');
    const p = await gql(`query($i: [[Float!]!]!) { predict(model: "digits", inputs: $i) { version predictions { label className } } }`, {
      i: samples.slice(0, 2),
    });
    for (const x of p.data.predict.predictions) expect(x.className).toBe(String(x.label));
    expect(p.data.predict).toMatchObject({ version: 3 });
    expect(p.data.predict.predictions.map((x: { label: number }) => x.label)).toEqual(json.predictions.slice(0, 2).map((x: { label: number }) => x.label));
  });

  it('rolls back to the tfjs version in one call, and predictions follow', async () => {
    const rb = await gql(`mutation { rollbackModel(name: "digits", version: 1) { servingVersion servingRuntime production { version format } } }`);
    expect(rb.errors).toBeUndefined();
    expect(rb.data.rollbackModel).toMatchObject({ servingVersion: 1, production: { version: 1, format: 'TFJS_LAYERS' } });
    expect(rb.data.rollbackModel.servingRuntime).toMatch(/^tfjs 4\.22\.0/);
    const tfjsAnswer = await post('digits', { inputs: [samples[0]] });
    expect(tfjsAnswer.json.version).toBe(1);
    expect(tfjsAnswer.json.predictions[0].className).toBeUndefined(); // tfjs folders record no class names
    expect(server.served()).toMatchObject([{ model: 'digits', version: 1, format: 'tfjs-layers' }]);
  });

  it('keeps answering while production moves between formats under load (tfjs → ONNX → tfjs)', async () => {
    const before = booked.reduce((n, b) => n + b.count, 0);
    const burst = (n: number) => Array.from({ length: n }, (_, i) => post('digits', { inputs: [samples[i % samples.length]] }));
    const a = burst(120);
    const toOnnx = gql(`mutation { promoteModel(name: "digits", version: 3) { servingVersion } }`);
    const b = burst(120);
    const [ra, pa, rb] = await Promise.all([Promise.all(a), toOnnx, Promise.all(b)]);
    expect(pa.data.promoteModel.servingVersion).toBe(3);
    const c = burst(120);
    const back = gql(`mutation { rollbackModel(name: "digits", version: 1) { servingVersion } }`);
    const d = burst(120);
    const [rc, pb, rd] = await Promise.all([Promise.all(c), back, Promise.all(d)]);
    expect(pb.data.rollbackModel.servingVersion).toBe(1);
    const all = [...ra, ...rb, ...rc, ...rd];
    expect(all.filter((r) => r.status !== 200)).toEqual([]);
    const byVersion = all.reduce<Record<number, number>>((acc, r) => {
      acc[r.json.version] = (acc[r.json.version] ?? 0) + 1;
      return acc;
    }, {});
    console.info('[onnx swap] answers per version while production moved tfjs → ONNX → tfjs:', JSON.stringify(byVersion));
    expect(Object.keys(byVersion).sort()).toEqual(['1', '3']);
    expect(booked.reduce((n, b) => n + b.count, 0) - before).toBe(480);
    expect((await post('digits', { inputs: [samples[0]] })).json.version).toBe(1);
  }, 120_000);

  it('gives an ONNX model the same clear BAD_INPUT errors as a tfjs one', async () => {
    const tfjsModel = await makeModelArtifact(tf, store, pixels, { runId: 'p' });
    await deploy('run-p1', { gates: { minTestAccuracy: 0.3 } }, tfjsModel, pixels, 'pixels-tfjs');
    await deploy('run-p2', { format: 'onnx', gates: { minTestAccuracy: 0.3 } }, tfjsModel, pixels, 'pixels-onnx');
    expect((await registry.resolveAlias('pixels-onnx'))?.format).toBe('onnx');
    const cases: { inputs: unknown; encoding?: 'raw' }[] = [
      { inputs: [rawPixels[0]] }, // raw 0–255 without encoding: raw
      { inputs: [rawPixels[0]!.slice(0, 63)] }, // wrong shape
      { inputs: [[rawPixels[0]!.slice(0, 8)]] }, // wrong nested shape
      { inputs: [rawPixels[0]!.map((v, j) => (j === 5 ? 300 : v))], encoding: 'raw' }, // outside the raw range
      { inputs: [rawPixels[0]!.map((v, j) => (j === 3 ? Number.NaN : v / 255))] }, // NaN
      { inputs: [] },
      { inputs: [[[1, 2], [3]]] },
    ];
    for (const c of cases) {
      const errs = await Promise.all(
        ['pixels-tfjs', 'pixels-onnx'].map((m) =>
          server.predict(m, c.inputs, c.encoding ? { encoding: c.encoding } : {}).then(
            () => undefined,
            (e: unknown) => e,
          ),
        ),
      );
      for (const e of errs) expect(e).toBeInstanceOf(ServingError);
      const [t, o] = errs as ServingError[];
      expect(o!.code).toBe('BAD_INPUT');
      expect(o!.message.replace('pixels-onnx', 'M')).toBe(t!.message.replace('pixels-tfjs', 'M'));
    }
    // Over HTTP too: a non-finite number (1e999 parses as Infinity) and raw pixels.
    const inf = await post('pixels-onnx', `{"inputs": [[${rawPixels[0]!.map((v, j) => (j === 0 ? '1e999' : String(v / 255))).join(',')}]]}`);
    expect(inf).toMatchObject({ status: 400, json: { error: { code: 'BAD_INPUT', message: 'inputs[0][0] is not a finite number' } } });
    const raw = await post('pixels-onnx', { inputs: [rawPixels[0]] });
    expect(raw.status).toBe(400);
    expect(raw.json.error.message).toContain('send raw 0–255 pixels with "encoding": "raw"');
    // And raw pixels with encoding: raw give the normalised pixels' answers.
    const ok = await post('pixels-onnx', { inputs: rawPixels, encoding: 'raw' });
    const norm = await post('pixels-onnx', { inputs: rawPixels.map((s) => s.map((v) => v / 255)) });
    expect(ok.status).toBe(200);
    expect(ok.json.predictions.map((p: { label: number }) => p.label)).toEqual(norm.json.predictions.map((p: { label: number }) => p.label));
    const tfjsAnswer = await post('pixels-tfjs', { inputs: rawPixels, encoding: 'raw' });
    expect(ok.json.predictions.map((p: { label: number }) => p.label)).toEqual(tfjsAnswer.json.predictions.map((p: { label: number }) => p.label));
  });

  it('keeps ONNX and tfjs versions in one LRU: concurrent requests over more models than fit all succeed', async () => {
    await registry.setAlias('digits', 'production', 3, 'test'); // ONNX
    const s = createModelServer({ registry, artifacts: store, maxLoaded: 1 });
    try {
      const names = ['digits', 'pixels-tfjs', 'pixels-onnx'];
      const results = await Promise.all(
        Array.from({ length: 60 }, (_, i) => s.predict(names[i % 3]!, [i % 3 === 0 ? samples[0] : rawPixels[0]!.map((v) => v / 255)])),
      );
      expect(results.map((r) => r.model)).toEqual(Array.from({ length: 60 }, (_, i) => names[i % 3]));
      expect(s.served()).toHaveLength(1);
      expect(s.served()[0]!.inFlight).toBe(0);
    } finally {
      await s.close();
      await registry.setAlias('digits', 'production', 1, 'test');
    }
  });
});
