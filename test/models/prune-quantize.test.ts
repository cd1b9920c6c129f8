import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as TF from '@tensorflow/tfjs';
import { loadTf } from '../../ml/backend.js';
import { loadModel } from '../../ml/models/io.js';
import { ApplicationFailure } from '@temporalio/common';
import { readMasks } from '../../ml/compression/masks.js';
import { affineQuantize, countZeros, decodeFloatWeights, magnitudePrune, pruneWeights, toFloat16Bits } from '../../ml/compression/weights.js';
import { loadSplit } from '../../ml/evaluation/evaluate.js';
import { pruneQuantizeParamsSchema, pruneQuantizeStage } from '../../plugins/core/prune-quantize/index.js';
import { contractProblems } from '../../plugins/registry.js';
import { dispatch } from '../ml/helpers.js';
import type { ArtifactRef } from '../../workflows/types.js';
import type { ArtifactStore } from '../../lib/artifacts.js';
import { makeDatasetArtifact, makeModelArtifact, serveFolder, stageContext, tempStore } from './fixtures.js';

let tf: typeof TF;
let backend: string;
let store: ArtifactStore;
let cleanup: () => Promise<void>;
let dataset: ArtifactRef;
let model: ArtifactRef;

beforeAll(async () => {
  ({ tf, backend } = await loadTf());
  ({ store, cleanup } = await tempStore());
  dataset = await makeDatasetArtifact(store);
  model = await makeModelArtifact(tf, store, dataset);
}, 120_000);
afterAll(async () => cleanup());

async function run(stageId: string, params: Record<string, unknown>, over: { attempt?: number; lastCheckpoint?: unknown } = {}) {
  const plugin = pruneQuantizeStage();
  const p = plugin.paramsSchema.parse(params);
  const ctx = stageContext(store, { stageId, ...over });
  const result = await plugin.run(ctx, p, { model, dataset });
  return { result, ctx, dir: store.resolve(result.outputs.model!) };
}

/** Argmax of a model over the whole test split. */
async function argmaxes(m: TF.LayersModel): Promise<Int32Array> {
  const test = await loadSplit(store.resolve(dataset), { split: 'test' });
  const out = tf.tidy(() => (m.predict(tf.tensor(test.x, [test.count, 8, 8])) as TF.Tensor).argMax(-1));
  const a = (await out.data()) as Int32Array;
  out.dispose();
  return a;
}

describe('pruning and quantization primitives', () => {
  it('prunes exactly round(sparsity × n) weights, smallest magnitudes first', () => {
    const v = Float32Array.from([0.5, -0.1, 0.3, -0.9, 0.05, 0.7, -0.2, 0.0, 1.5, -0.01]);
    const keep = magnitudePrune(v, 0.3);
    expect(Array.from(keep)).toEqual([1, 1, 1, 1, 0, 1, 1, 0, 1, 0]);
    expect(Array.from(v).filter((x) => x === 0).length).toBe(3);
  });

  it('affine uint8 quantization keeps 0 exactly representable and round-trips within one step', () => {
    const v = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * (i % 7 === 0 ? 0 : 1.3) + 0.2);
    const q = affineQuantize(v, 'uint8');
    let maxErr = 0;
    for (let i = 0; i < v.length; i++) {
      const d = q.data[i]! * q.scale + q.min;
      maxErr = Math.max(maxErr, Math.abs(d - v[i]!));
      if (v[i] === 0) expect(d).toBe(0);
    }
    expect(maxErr).toBeLessThanOrEqual(q.scale / 2 + 1e-7);
  });

  it('float16 encoding matches IEEE half for known values', () => {
    expect(toFloat16Bits(1)).toBe(0x3c00);
    expect(toFloat16Bits(-2)).toBe(0xc000);
    expect(toFloat16Bits(0.5)).toBe(0x3800);
    expect(toFloat16Bits(65504)).toBe(0x7bff);
    expect(toFloat16Bits(1e6)).toBe(0x7c00);
    expect(toFloat16Bits(2 ** -24)).toBe(0x0001);
    expect(toFloat16Bits(0)).toBe(0);
  });

  it('the plugin satisfies the contract and rejects bad params', () => {
    expect(contractProblems(pruneQuantizeStage())).toEqual([]);
    expect(pruneQuantizeParamsSchema.safeParse({ sparsity: 1.5 }).success).toBe(false);
    expect(pruneQuantizeParamsSchema.safeParse({ quantize: 'int4' }).success).toBe(false);
    expect(pruneQuantizeParamsSchema.safeParse({ sprasity: 0.5 }).success).toBe(false);
  });
});

describe('core:prune-quantize', () => {
  it('reaches the exact target sparsity, writes masks, and the uint8 model loads with plain tf.loadLayersModel over HTTP', async () => {
    const { result, dir } = await run('pq-uint8', { sparsity: 0.6, quantize: 'uint8' });
    const m = result.metrics;
    expect(m.tfBackend).toBe(backend);
    expect(await readdir(dir)).toEqual(expect.arrayContaining(['model.json', 'weights.bin', 'masks.json', 'masks.bin']));

    // Exact sparsity: per kernel, round(0.6 × n) zeros in the mask.
    const masks = (await readMasks(dir))!;
    expect(masks.map((x) => x.name).sort()).toEqual(['dense_1/kernel', 'output/kernel']);
    for (const mask of masks) {
      const pruned = mask.keep.reduce((n, k) => n + (k === 0 ? 1 : 0), 0);
      expect(pruned).toBe(Math.round(0.6 * mask.keep.length));
    }
    const total = masks.reduce((n, x) => n + x.keep.length, 0);
    expect(m.prunedWeights).toBe(Math.round(0.6 * 64 * 128) + Math.round(0.6 * 128 * 10));
    expect(m.sparsity).toBe((m.prunedWeights as number) / total);

    // The manifest carries the quantization field exactly as tfjs-converter writes it.
    const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
    for (const w of json.weightsManifest[0].weights) {
      expect(w.dtype).toBe('float32');
      expect(Object.keys(w.quantization).sort()).toEqual(['dtype', 'min', 'scale']);
      expect(w.quantization.dtype).toBe('uint8');
    }
    expect(m.weightBytesBefore as number).toBeGreaterThanOrEqual(3.9 * (m.weightBytesAfter as number));
    expect((await readFile(path.join(dir, 'weights.bin'))).byteLength).toBe(m.weightBytesAfter);

    // Plain load: a static HTTP server and the standard tfjs HTTP loader.
    const http = await serveFolder(dir);
    try {
      const served = await tf.loadLayersModel(`${http.url}/model.json`);
      // Pruned weights stay exactly zero after dequantization.
      for (const mask of masks) {
        const w = served.weights.find((x) => x.originalName === mask.name)!;
        const vals = w.read().dataSync();
        for (let i = 0; i < mask.keep.length; i++) if (mask.keep[i] === 0) expect(vals[i]).toBe(0);
      }
      // Same argmax as the float pruned model on ≥ 99% of the test rows.
      const { dir: floatDir } = await run('pq-float', { sparsity: 0.6, quantize: 'none' });
      const floatModel = await loadModel(tf, floatDir);
      const a = await argmaxes(served);
      const b = await argmaxes(floatModel);
      let same = 0;
      for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
      expect(same / a.length).toBeGreaterThanOrEqual(0.99);
      served.dispose();
      floatModel.dispose();
    } finally {
      await http.close();
    }
    expect(m.testAccuracyBefore as number).toBeGreaterThan(0.5);
    expect(typeof m.testAccuracyAfter).toBe('number');
  }, 120_000);

  it('the masks are read by the multi-device-fit mask reader (ml/training/weights.ts)', async () => {
    const { dir, result } = await run('pq-masks', { sparsity: 0.75, quantize: 'none' });
    const { flatWeights, readMasks: readTrainingMasks } = await import('../../ml/training/weights.js');
    const m = await loadModel(tf, dir);
    const { layout, flat } = flatWeights(m);
    const masks = (await readTrainingMasks(dir, layout))!;
    expect(masks.pruned).toBe(result.metrics.prunedWeights);
    expect(masks.masked).toBe(result.metrics.prunableWeights);
    for (let i = 0; i < flat.length; i++) if (masks.mask[i] === 0) expect(flat[i]).toBe(0);
    m.dispose();
  }, 60_000);

  it('float16 and uint16 models load and predict like the original (no pruning)', async () => {
    const original = await loadModel(tf, store.resolve(model));
    const ref = await argmaxes(original);
    original.dispose();
    for (const quantize of ['float16', 'uint16'] as const) {
      const { result, dir } = await run(`pq-${quantize}`, { sparsity: 0, quantize });
      expect(result.metrics.weightBytesBefore).toBe(2 * (result.metrics.weightBytesAfter as number));
      const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
      const q = json.weightsManifest[0].weights[0].quantization;
      expect(q.dtype).toBe(quantize);
      if (quantize === 'float16') expect(Object.keys(q)).toEqual(['dtype']);
      const http = await serveFolder(dir);
      try {
        const m = await tf.loadLayersModel(`${http.url}/model.json`);
        const a = await argmaxes(m);
        let same = 0;
        for (let i = 0; i < a.length; i++) if (a[i] === ref[i]) same++;
        expect(same / a.length).toBeGreaterThanOrEqual(0.99);
        m.dispose();
      } finally {
        await http.close();
      }
    }
  }, 120_000);

  it('fine-tuning keeps pruned weights at zero', async () => {
    const { result, dir, ctx } = await run('pq-finetune', { sparsity: 0.8, fineTuneEpochs: 1, fineTuneSamples: 512, batchSize: 64, quantize: 'none' });
    expect(result.metrics.fineTuneSteps).toBe(8);
    expect(ctx.heartbeats.length).toBeGreaterThanOrEqual(8);
    const masks = (await readMasks(dir))!;
    const { folderLoadHandler } = await import('../../ml/models/io.js');
    const weights = decodeFloatWeights(await folderLoadHandler(tf, dir).load!());
    for (const mask of masks) {
      const w = weights.find((x) => x.name === mask.name)!;
      for (let i = 0; i < mask.keep.length; i++) if (mask.keep[i] === 0) expect(w.values[i]).toBe(0);
    }
    // And the fine-tune changed the kept weights (it really trained).
    const before = decodeFloatWeights(await folderLoadHandler(tf, store.resolve(model)).load!());
    const k0 = before.find((x) => x.name === 'dense_1/kernel')!;
    const k1 = weights.find((x) => x.name === 'dense_1/kernel')!;
    expect(k1.values.some((v, i) => v !== 0 && v !== k0.values[i])).toBe(true);
    const { zeros, total } = countZeros(weights);
    expect(zeros / total).toBeGreaterThanOrEqual(0.8 - 1e-9);
    // Gradual by default: the masks came from the fine-tune's schedule, which ended at the target.
    expect(result.metrics).toMatchObject({ pruningSchedule: 'gradual', pruningEndStep: 6, pruningFrequency: 100, fineTuneLoop: 'step' });
    for (const mask of masks) expect(mask.keep.length - mask.keep.reduce((a, b) => a + b, 0)).toBe(Math.round(0.8 * mask.keep.length));
  }, 120_000);

  it("params written before the schedule existed stay valid; schedule: 'oneshot' prunes at once and fine-tunes with fixed masks", async () => {
    const plugin = pruneQuantizeStage();
    expect(plugin.paramsSchema.parse({ sparsity: 0.8, fineTuneEpochs: 1, quantize: 'none' })).toMatchObject({
      schedule: 'gradual',
      pruningFrequency: 100,
      pruningEndFraction: 0.75,
      seed: 42,
    });
    expect(plugin.paramsSchema.safeParse({ schedule: 'sudden' }).success).toBe(false);
    const { result, dir } = await run('pq-oneshot', {
      sparsity: 0.8,
      fineTuneEpochs: 1,
      fineTuneSamples: 256,
      batchSize: 64,
      quantize: 'none',
      schedule: 'oneshot',
    });
    expect(result.metrics).toMatchObject({ pruningSchedule: 'oneshot', fineTuneSteps: 4 });
    expect(result.metrics).not.toHaveProperty('pruningEndStep');
    // The one-shot masks are those of the input model's magnitudes.
    const { folderLoadHandler } = await import('../../ml/models/io.js');
    const before = decodeFloatWeights(await folderLoadHandler(tf, store.resolve(model)).load!());
    const expected = pruneWeights(before, 0.8);
    const masks = (await readMasks(dir))!;
    expect(masks.map((m) => Array.from(m.keep))).toEqual(expected.map((m) => Array.from(m.keep)));
  }, 120_000);

  it('refuses an already quantized model with a clear non-retryable error', async () => {
    const { result } = await run('pq-first', { sparsity: 0.5, quantize: 'uint8' });
    const err = await dispatch({ plugin: pruneQuantizeStage(), store, stageId: 'pq-second', inputs: { model: result.outputs.model!, dataset } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'MODEL_UNSUPPORTED', nonRetryable: true, message: expect.stringContaining('already quantized') });
  }, 60_000);

  it('the fine-tune runs in a child process and resumes from its checkpointed epoch on a retry, not from 0', async () => {
    const stageId = 'pq-finetune-resume';
    const params = { sparsity: 0.8, fineTuneSamples: 512, batchSize: 64, quantize: 'none' };
    // Attempt 1 fine-tunes 1 epoch; its last heartbeat is what Temporal hands to attempt 2.
    const first = await run(stageId, { ...params, fineTuneEpochs: 1 });
    const last = first.ctx.heartbeats.at(-1) as { phase: string; epoch: number; step: number; checkpoint: string };
    expect(last).toMatchObject({ phase: 'fine-tune', epoch: 1, step: 8, checkpoint: expect.stringMatching(/^artifact:.*epoch-0001$/) });
    expect(first.result.metrics.fineTuneResumedFromEpoch).toBe(0);

    const second = await run(stageId, { ...params, fineTuneEpochs: 3 }, { attempt: 2, lastCheckpoint: last });
    expect(second.result.metrics.fineTuneResumedFromEpoch).toBe(1);
    expect(second.result.metrics.fineTuneSteps).toBe(24);
    // Heartbeats carry the last finished checkpoint: epoch 1 (resumed) until epoch 2 is written.
    const beats = second.ctx.heartbeats.filter((b) => (b as { phase?: string }).phase === 'fine-tune') as { epoch: number; step: number }[];
    expect(beats.every((b) => b.epoch >= 1)).toBe(true);
    expect(beats.find((b) => b.step > 0)?.step).toBe(9); // the first step run is epoch 2's first
    expect([...new Set(beats.map((b) => b.epoch))]).toEqual([1, 2, 3]);
    // Pruned weights stayed zero through the resumed epochs.
    const masks = (await readMasks(second.dir))!;
    const { folderLoadHandler } = await import('../../ml/models/io.js');
    const weights = decodeFloatWeights(await folderLoadHandler(tf, second.dir).load!());
    for (const mask of masks) {
      const w = weights.find((x) => x.name === mask.name)!;
      for (let i = 0; i < mask.keep.length; i++) if (mask.keep[i] === 0) expect(w.values[i]).toBe(0);
    }
  }, 180_000);

  it('kills the fine-tune process and rejects when the stage is cancelled', async () => {
    const plugin = pruneQuantizeStage();
    const ac = new AbortController();
    const ctx = stageContext(store, { stageId: 'pq-finetune-cancel', signal: ac.signal });
    const running = plugin.run(ctx, plugin.paramsSchema.parse({ sparsity: 0.5, fineTuneEpochs: 100, batchSize: 8, quantize: 'none' }), { model, dataset });
    const t = setInterval(() => {
      if (ctx.heartbeats.some((b) => (b as { phase?: string }).phase === 'fine-tune')) ac.abort(new Error('cancelled by test'));
    }, 20);
    await expect(running).rejects.toThrow(/cancelled by test/);
    clearInterval(t);
  }, 120_000);
});
