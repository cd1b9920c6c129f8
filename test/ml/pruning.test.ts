// Gradual magnitude pruning (ml/compression/schedule.ts) and the fine-tune that carries it out
// (ml/training/fine-tune-job.ts), with real tfjs on this project's backend: the schedule rises
// monotonically to the target and ends there exactly; the fine-tune reaches exactly the target per
// kernel, holds fewer zeros part-way, shuffles its epochs (another seed trains other weights, the
// same seed the same ones) and keeps pruned weights at +0.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTf } from '../../ml/backend.js';
import { readMasks } from '../../ml/compression/masks.js';
import { gradualSchedule, isPruningStep, sparsityAfter, sparsityAt } from '../../ml/compression/schedule.js';
import { decodeFloatWeights } from '../../ml/compression/weights.js';
import { folderLoadHandler, loadModel, saveModel } from '../../ml/models/io.js';
import { buildMlp, seedMlpSpec } from '../../ml/models/mlp.js';
import { fineTuneOrder, runFineTuneJob } from '../../ml/training/fine-tune-job.js';
import type { FineTuneJob, FineTuneProgress } from '../../ml/training/jobs.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { makeContext, tmpStore } from './helpers.js';

let store: Awaited<ReturnType<typeof tmpStore>>;
let datasetDir: string;
let modelDir: string;
const HIDDEN = 16;

beforeAll(async () => {
  store = await tmpStore();
  const prep = dataPrepStage();
  const res = await prep.run(makeContext({ store: store.store, stageId: 'prep' }), prep.paramsSchema.parse({ limit: 700, seed: 5 }), {});
  datasetDir = store.store.resolve(res.outputs.dataset!);
  const { tf } = await loadTf();
  modelDir = path.join(store.root, 'unpruned');
  await saveModel(buildMlp(tf, { ...seedMlpSpec, hiddenUnits: [HIDDEN] }), modelDir);
});
afterAll(async () => {
  await store.cleanup();
});

describe('polynomial sparsity schedule', () => {
  it('rises monotonically from 0 to the target, reached exactly at its end step and held after', () => {
    const s = gradualSchedule({ target: 0.8, totalSteps: 1000, frequency: 100, endFraction: 0.75 });
    expect(s).toMatchObject({ initialSparsity: 0, finalSparsity: 0.8, beginStep: 0, endStep: 750, frequency: 100, power: 3 });
    let last = -1;
    for (let t = 0; t <= 1000; t++) {
      const v = sparsityAt(s, t);
      expect(v).toBeGreaterThanOrEqual(last);
      last = v;
    }
    expect(sparsityAt(s, 0)).toBe(0);
    expect(sparsityAt(s, 750)).toBe(0.8);
    expect(sparsityAt(s, 1000)).toBe(0.8);
    // Cubic: most of the pruning happens early (half-way: 1 − 0.5³ = 87.5 % of the target).
    expect(sparsityAt(s, 375)).toBeCloseTo(0.8 * 0.875, 10);
    // Masks change every 100 steps and at the end step, which need not be on that grid.
    const steps = Array.from({ length: 1001 }, (_, t) => t).filter((t) => isPruningStep(s, t));
    expect(steps).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 750]);
    expect(sparsityAfter(s, 149)).toBe(sparsityAt(s, 100));
    expect(sparsityAfter(s, 760)).toBe(0.8);
  });
});

function job(over: Partial<FineTuneJob> & { outDir: string }): FineTuneJob {
  return {
    kind: 'fine-tune',
    datasetDir,
    modelDir,
    checkpointDir: path.join(over.outDir, '..', `${path.basename(over.outDir)}-epochs`),
    epochs: 2,
    batchSize: 32,
    learningRate: 1e-3,
    seed: 1,
    prune: { target: 0.8, frequency: 3, endFraction: 0.75 },
    ...over,
  };
}

function zerosOf(values: Float32Array): number {
  return values.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);
}

describe('gradual pruning in the fine-tune', () => {
  it('prunes every kernel to exactly the target over the steps, fewer zeros part-way, pruned values +0, masks written', async () => {
    const outDir = path.join(store.root, 'ft-a');
    const beats: FineTuneProgress[] = [];
    const r = await runFineTuneJob(job({ outDir }), (p) => beats.push(p));
    const stepsPerEpoch = Math.ceil(630 / 32); // 700 rows, 10 % for validation
    expect(r).toMatchObject({
      trainLoop: 'step',
      epochs: 2,
      steps: 2 * stepsPerEpoch,
      schedule: { kind: 'gradual', endStep: Math.round(0.75 * 2 * stepsPerEpoch), frequency: 3, finalSparsity: 0.8 },
    });
    const { tf } = await loadTf();
    const out = decodeFloatWeights(await folderLoadHandler(tf, outDir).load!());
    const masks = (await readMasks(outDir))!;
    expect(masks.map((m) => m.name)).toEqual(['dense_1/kernel', 'output/kernel']);
    for (const m of masks) {
      const w = out.find((x) => x.name === m.name)!;
      expect(m.keep.length - m.keep.reduce((a, b) => a + b, 0), m.name).toBe(Math.round(0.8 * w.values.length));
      for (let i = 0; i < w.values.length; i++) if (!m.keep[i]) expect(Object.is(w.values[i], 0)).toBe(true);
      expect(zerosOf(w.values)).toBe(Math.round(0.8 * w.values.length));
    }
    // After epoch 1 (step 20 of 40, the end step 30), the checkpoint holds the schedule's sparsity then.
    const epoch1 = path.join(store.root, 'ft-a-epochs', (await readdir(path.join(store.root, 'ft-a-epochs'))).sort()[0]!);
    const checkpoint = await loadModel(tf, epoch1); // with its optimizer state
    const kernel = {
      values: checkpoint.weights
        .find((w) => w.originalName === 'dense_1/kernel')!
        .read()
        .dataSync() as Float32Array,
    };
    const expected = sparsityAfter(gradualSchedule({ target: 0.8, totalSteps: 2 * stepsPerEpoch, frequency: 3, endFraction: 0.75 }), stepsPerEpoch);
    expect(expected).toBeGreaterThan(0.3);
    expect(expected).toBeLessThan(0.8);
    expect(zerosOf(kernel.values)).toBe(Math.round(expected * kernel.values.length));
    expect(beats.filter((b) => b.epochDone).map((b) => b.epoch)).toEqual([1, 2]);
  });

  it('shuffles each epoch with its seed: another order every epoch, the same for the same seed', async () => {
    const a1 = fineTuneOrder(630, 1, 1);
    expect(Array.from(a1)).not.toEqual(Array.from({ length: 630 }, (_, i) => i));
    expect(Array.from(fineTuneOrder(630, 1, 2))).not.toEqual(Array.from(a1));
    expect(fineTuneOrder(630, 1, 1)).toEqual(a1);
    expect([...a1].sort((x, y) => x - y)).toEqual(Array.from({ length: 630 }, (_, i) => i));

    // The job trains in that order: the same seed gives the same weights, another seed others.
    const { tf } = await loadTf();
    const weightsOf = async (name: string, seed: number) => {
      const outDir = path.join(store.root, name);
      await runFineTuneJob(job({ outDir, seed, epochs: 1, prune: { target: 0.5, frequency: 5, endFraction: 0.5 } }), () => undefined);
      return decodeFloatWeights(await folderLoadHandler(tf, outDir).load!()).find((w) => w.name === 'output/kernel')!.values;
    };
    const s1 = await weightsOf('ft-s1', 1);
    expect(await weightsOf('ft-s1-again', 1)).toEqual(s1);
    expect(await weightsOf('ft-s2', 2)).not.toEqual(s1);
  });
});
