// Small real fixtures for the model tests: an artifact store in a temp folder, a seeded
// synthetic dataset (Gaussian clusters, 8×8 "images", 10 classes) and an MLP trained on it.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { ArtifactStore } from '../../lib/artifacts.js';
import { createStageContext } from '../../activities/stage-context.js';
import { silentLogger } from '../../lib/logger.js';
import { buildDataset, writeDataset } from '../../ml/data/dataset.js';
import { seededRandom } from '../../ml/data/rng.js';
import { buildMlp } from '../../ml/models/mlp.js';
import { loadModel, saveModel } from '../../ml/models/io.js';
import { exportOnnxFolder } from '../../ml/onnx/export.js';
import type { InputEncodingMeta } from '../../ml/onnx/meta.js';
import { z } from 'zod';
import { defineStage, PLUGIN_API_VERSION, type RunStarter, type StageContext } from '../../plugins/contract.js';
import type { StageServices } from '../../plugins/services.js';
import type { ArtifactRef } from '../../workflows/types.js';

export const FEATURE_SHAPE = [8, 8];
export const NUM_CLASSES = 10;

export async function tempStore(): Promise<{ store: ArtifactStore; root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-models-'));
  return { store: new ArtifactStore(root), root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** Clusters around 10 random centres; noise makes it hard enough that accuracy is not trivially 1. */
export function syntheticRows(n: number, seed: number, centres: Float32Array): { x: Float32Array; y: Uint8Array } {
  const d = FEATURE_SHAPE.reduce((a, b) => a * b, 1);
  const rand = seededRandom(seed);
  const x = new Float32Array(n * d);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(rand() * NUM_CLASSES);
    y[i] = c;
    for (let j = 0; j < d; j++) x[i * d + j] = centres[c * d + j]! + 2.2 * gaussian(rand);
  }
  return { x, y };
}

export function centres(seed = 7): Float32Array {
  const d = FEATURE_SHAPE.reduce((a, b) => a * b, 1);
  const rand = seededRandom(seed);
  return Float32Array.from({ length: NUM_CLASSES * d }, () => gaussian(rand));
}

export async function makeDatasetArtifact(store: ArtifactStore, opts: { runId?: string; train?: number; test?: number } = {}): Promise<ArtifactRef> {
  const c = centres();
  const pool = syntheticRows(opts.train ?? 1200, 11, c);
  const test = syntheticRows(opts.test ?? 500, 12, c);
  const ds = buildDataset({ featureShape: FEATURE_SHAPE, numClasses: NUM_CLASSES, pool, test, validationFraction: 0.1, seed: 3, normalize: 'zscore' });
  const dir = await store.freshDir(store.dirFor(opts.runId ?? 'fixture', 'data-prep', 'dataset'));
  await writeDataset(dir, ds);
  return store.seal('dataset', dir);
}

/** 8×8 "images" of bytes (pixels 0–255, scaled by data prep): class c lights up pixels j ≡ c (mod 10), with noise. */
export async function makePixelDatasetArtifact(store: ArtifactStore): Promise<ArtifactRef> {
  const make = (n: number, seed: number) => {
    const rand = seededRandom(seed);
    const x = new Uint8Array(n * 64);
    const y = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = Math.floor(rand() * NUM_CLASSES);
      y[i] = c;
      for (let j = 0; j < 64; j++) x[i * 64 + j] = Math.min(255, Math.floor((j % 10 === c ? 170 : 30) + rand() * 80));
    }
    return { x, y };
  };
  const ds = buildDataset({
    featureShape: FEATURE_SHAPE,
    numClasses: NUM_CLASSES,
    pool: make(800, 1),
    test: make(200, 2),
    validationFraction: 0.1,
    seed: 3,
    normalize: 'scale255',
  });
  const dir = await store.freshDir(store.dirFor('pixels', 'data-prep', 'dataset'));
  await writeDataset(dir, ds);
  return store.seal('dataset', dir);
}

/**
 * An ONNX model folder (model.onnx + capstan-model.json) as an exporter outside Capstan would hand
 * it over: the tfjs model artifact converted with Capstan's converter and sealed as a 'model'.
 */
export async function makeOnnxModelArtifact(
  tf: typeof TF,
  store: ArtifactStore,
  tfjsModel: ArtifactRef,
  opts: { runId?: string; quantize?: 'none' | 'uint8'; encoding?: InputEncodingMeta } = {},
): Promise<ArtifactRef> {
  const net = await loadModel(tf, store.resolve(tfjsModel));
  const dir = await store.freshDir(store.dirFor(opts.runId ?? 'fixture', 'export-onnx', 'model'));
  try {
    await exportOnnxFolder(net, dir, { quantize: opts.quantize ?? 'none', ...(opts.encoding ? { encoding: opts.encoding } : {}) });
  } finally {
    net.dispose();
  }
  return store.seal('model', dir);
}

/** Trains a 64-128-10 MLP for a few epochs on the dataset artifact and stores it as a 'model' artifact. */
export async function makeModelArtifact(
  tf: typeof TF,
  store: ArtifactStore,
  dataset: ArtifactRef,
  opts: { runId?: string; stageId?: string; epochs?: number; hidden?: number[] } = {},
): Promise<ArtifactRef> {
  const { readDataset, inputsOf } = await import('../../ml/data/dataset.js');
  const ds = await readDataset(store.resolve(dataset), { splits: ['train'] });
  const model = buildMlp(tf, {
    inputShape: FEATURE_SHAPE,
    hiddenUnits: opts.hidden ?? [128],
    activation: 'relu',
    dropout: 0,
    numClasses: NUM_CLASSES,
    seed: 5,
  });
  model.compile({ optimizer: tf.train.adam(0.005), loss: 'sparseCategoricalCrossentropy' });
  const x = tf.tensor(inputsOf(ds, ds.splits.train), [ds.splits.train.count, ...FEATURE_SHAPE]);
  const y = tf.tensor1d(Array.from(ds.splits.train.y), 'float32');
  await model.fit(x, y, { epochs: opts.epochs ?? 4, batchSize: 64, shuffle: false, verbose: 0 });
  x.dispose();
  y.dispose();
  const dir = await store.freshDir(store.dirFor(opts.runId ?? 'fixture', opts.stageId ?? 'pretrain', 'model'));
  await saveModel(model, dir);
  model.dispose();
  return store.seal('model', dir);
}

/** The token the model tests' runs are started with unless a test says otherwise: an operator, owner of what it deploys first. */
export const TEST_OWNER: RunStarter = { name: 'test-owner', role: 'operator', tokenId: '0123456789ab' };

/**
 * A StageContext as the dispatch builds it, heartbeats recorded. Services the test does not
 * give fail loudly when a stage asks for them. Started by TEST_OWNER unless `startedBy` says
 * otherwise (null: a run that records no starter).
 */
export function stageContext(
  store: ArtifactStore,
  over: {
    runId?: string;
    pipeline?: string;
    stageId?: string;
    attempt?: number;
    lastCheckpoint?: unknown;
    signal?: AbortSignal;
    services?: Partial<StageServices>;
    startedBy?: RunStarter | null;
  } = {},
): StageContext & { heartbeats: unknown[] } {
  const heartbeats: unknown[] = [];
  const given = over.services ?? {};
  const services = new Proxy(given as StageServices, {
    get(t, name) {
      if (name in t) return t[name as keyof StageServices];
      throw new Error(`this test wired no "${String(name)}" service`);
    },
  });
  const { ctx } = createStageContext({
    artifacts: store,
    services,
    logger: silentLogger,
    runId: over.runId ?? 'run-1',
    pipeline: over.pipeline ?? 'test-pipeline',
    stageId: over.stageId ?? 'stage',
    attempt: over.attempt ?? 1,
    ...(over.startedBy !== null ? { startedBy: over.startedBy ?? TEST_OWNER } : {}),
    lastCheckpoint: over.lastCheckpoint,
    signal: over.signal ?? new AbortController().signal,
    heartbeat: (d?: unknown) => void heartbeats.push(d),
  });
  return Object.assign(ctx, { heartbeats });
}

/** A real static HTTP server over a folder (what a browser or CDN would do). */
export async function serveFolder(dir: string): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent((req.url ?? '/').split('?')[0]!).replace(/^\/+/, '');
    const file = path.resolve(dir, rel);
    if (!file.startsWith(path.resolve(dir) + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    stat(file).then(
      (s) => {
        res.writeHead(200, { 'content-length': s.size, 'content-type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream' });
        createReadStream(file).pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  return { url: `http://127.0.0.1:${addr.port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/**
 * A stage that hands over a model trained beforehand and its dataset, as training would (no run
 * trains): `get` is read when the stage runs, so the fixtures may be made after the stage is.
 */
export function fixtureModelStage(name: string, get: () => { store: ArtifactStore; model: ArtifactRef; dataset: ArtifactRef }) {
  return defineStage({
    name,
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'copies a model trained beforehand, and its dataset',
    paramsSchema: z.object({}),
    consumes: [],
    produces: ['model', 'dataset'],
    resource: 'cpu',
    retry: { maximumAttempts: 1 },
    async run(ctx) {
      const f = get();
      const copy = (ref: ArtifactRef) => async (dir: string) => void (await cp(f.store.resolve(ref), dir, { recursive: true }));
      return { outputs: { model: await ctx.output('model', copy(f.model)), dataset: await ctx.output('dataset', copy(f.dataset)) }, metrics: {} };
    },
  });
}
