// The step loop (ml/training/step-loop.ts) against model.fit, on whichever backend this project runs:
// the same seed gives the same test accuracy (within 0.3 points), the same weights after a few
// steps of a small conv net (so the hand-written backward pass is the gradient), and a checkpoint
// in the middle changes nothing (the Adam state goes into and comes back from model.optimizer).
import type * as TF from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTf } from '../../ml/backend.js';
import { readDataset } from '../../ml/data/dataset.js';
import { loadModel } from '../../ml/models/io.js';
import { buildMlp, compileClassifier, seedMlpSpec } from '../../ml/models/mlp.js';
import { writeCheckpoint } from '../../ml/training/checkpoints.js';
import { labelled } from '../../ml/training/pretrain-job.js';
import { ensureConvFilterGrad } from '../../ml/training/step-kernels.js';
import { createStepLoop, planStepLoop, type StepLoop } from '../../ml/training/step-loop.js';
import { evaluate, trainEpochs, type LabelledArrays } from '../../ml/training/train-loop.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { makeContext, tmpStore } from './helpers.js';

type Tf = typeof TF;
let tf: Tf;
let store: Awaited<ReturnType<typeof tmpStore>>;
let train: LabelledArrays;
let validation: LabelledArrays;
let test: LabelledArrays;

beforeAll(async () => {
  ({ tf } = await loadTf());
  store = await tmpStore();
  const prep = dataPrepStage();
  const res = await prep.run(makeContext({ store: store.store, stageId: 'prep' }), prep.paramsSchema.parse({ limit: 8000, seed: 11 }), {});
  const ds = await readDataset(store.store.resolve(res.outputs.dataset!));
  train = labelled(ds, ds.splits.train);
  validation = labelled(ds, ds.splits.validation);
  test = labelled(ds, ds.splits.test);
});
afterAll(async () => {
  await store.cleanup();
});

function seedModel(): TF.LayersModel {
  const m = buildMlp(tf, seedMlpSpec);
  compileClassifier(tf, m, { learningRate: 1e-3 });
  return m;
}

function withBatchNorm(): TF.LayersModel {
  const m = tf.sequential();
  m.add(tf.layers.dense({ inputShape: [4], units: 3 }));
  m.add(tf.layers.batchNormalization());
  m.add(tf.layers.dense({ units: 2, activation: 'softmax' }));
  return m;
}

async function stepLoop(model: TF.LayersModel): Promise<StepLoop> {
  const s = await createStepLoop(tf, model);
  if ('unsupported' in s) throw new Error(s.unsupported);
  return s;
}

function maxAbsDiff(a: TF.LayersModel, b: TF.LayersModel): number {
  let d = 0;
  a.getWeights().forEach((w, i) => {
    const x = w.dataSync();
    const y = b.getWeights()[i]!.dataSync();
    for (let j = 0; j < x.length; j++) d = Math.max(d, Math.abs(x[j]! - y[j]!));
  });
  return d;
}

describe('step loop', () => {
  it('reaches the test accuracy of model.fit with the same seed (within 0.3 points), 2 epochs of the seed MLP', async () => {
    const fit = seedModel();
    const fitRun = await trainEpochs(tf, fit, { train, validation }, { epochs: 2, fromEpoch: 0, batchSize: 32, seed: 5, loop: 'model.fit' });
    const step = seedModel();
    const stepRun = await trainEpochs(tf, step, { train, validation }, { epochs: 2, fromEpoch: 0, batchSize: 32, seed: 5 });
    expect(fitRun.loop).toBe('model.fit');
    expect(stepRun.loop).toBe('step');
    const a = evaluate(tf, fit, test).accuracy;
    const b = evaluate(tf, step, test).accuracy;
    expect(a).toBeGreaterThan(0.85);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(0.003);
    // Per-epoch metrics agree too (train loss and accuracy are tallied on the device).
    for (let e = 0; e < 2; e++) {
      expect(stepRun.stats[e]!.trainLoss).toBeCloseTo(fitRun.stats[e]!.trainLoss, 2);
      expect(Math.abs(stepRun.stats[e]!.trainAccuracy - fitRun.stats[e]!.trainAccuracy)).toBeLessThan(0.005);
      expect(Math.abs(stepRun.stats[e]!.valAccuracy - fitRun.stats[e]!.valAccuracy)).toBeLessThan(0.005);
    }
  });

  it('takes the same steps as model.fit on a small conv net (conv2d, max pooling, dense), so its backward pass is the gradient', async () => {
    ensureConvFilterGrad(tf); // wasm has no filter-gradient kernel of its own; model.fit needs it too
    const build = () => {
      const m = tf.sequential();
      m.add(
        tf.layers.conv2d({
          inputShape: [28, 28, 1],
          filters: 4,
          kernelSize: 3,
          activation: 'relu',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        }),
      );
      m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
      m.add(
        tf.layers.conv2d({
          filters: 6,
          kernelSize: 3,
          strides: 2,
          padding: 'same',
          activation: 'tanh',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
        }),
      );
      m.add(tf.layers.flatten());
      m.add(tf.layers.dense({ units: 16, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }));
      m.add(tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }));
      // Adam's step is about lr·sign(g) for gradients far below epsilon's scale, so with the usual
      // 1e-7 two equal gradients that differ in rounding could move a weight ±lr: a larger epsilon
      // keeps the comparison about the gradient.
      m.compile({ optimizer: tf.train.adam(1e-2, 0.9, 0.999, 1e-4), loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'] });
      return m;
    };
    const rows: LabelledArrays = { x: train.x.subarray(0, 320 * 784), y: train.y.subarray(0, 320), featureShape: [28, 28, 1] };
    const fit = build();
    const xs = tf.tensor(rows.x, [320, 28, 28, 1]);
    const ys = tf.tensor1d(Float32Array.from(rows.y));
    await fit.fit(xs, ys, { batchSize: 32, epochs: 1, shuffle: false, verbose: 0 });
    xs.dispose();
    ys.dispose();
    const step = build();
    const loop = await stepLoop(step);
    await loop.trainPass(rows, { batchSize: 32, seed: 1 });
    await loop.commit();
    expect(loop.steps()).toBe(10);
    // 10 Adam steps of lr 1e-2 move weights by up to ~0.1; a wrong gradient shows at that scale (measured: ~2e-6).
    expect(maxAbsDiff(fit, step)).toBeLessThan(1e-4);
    loop.dispose();
  });

  it('computes the conv filter gradient it registers for wasm like a plain loop does (strides 1 and 2, same and valid)', () => {
    ensureConvFilterGrad(tf);
    for (const [strides, pad] of [
      [1, 'valid'],
      [2, 'same'],
      [2, 'valid'],
    ] as const) {
      const x = tf.randomUniform([2, 7, 6, 3], -1, 1, 'float32', 1) as TF.Tensor4D;
      const w = [3, 3, 3, 4] as [number, number, number, number];
      const info = tf.backend_util.computeConv2DInfo(x.shape, w, strides, 1, pad);
      const dy = tf.randomUniform([2, info.outHeight, info.outWidth, 4], -1, 1, 'float32', 2) as TF.Tensor4D;
      const got = (tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides, pad, dataFormat: 'NHWC', filterShape: w }) as TF.Tensor).dataSync();
      const xv = x.dataSync();
      const dv = dy.dataSync();
      const { top, left } = info.padInfo;
      let worst = 0;
      for (let kh = 0; kh < 3; kh++)
        for (let kw = 0; kw < 3; kw++)
          for (let ci = 0; ci < 3; ci++)
            for (let co = 0; co < 4; co++) {
              let sum = 0;
              for (let b = 0; b < 2; b++)
                for (let i = 0; i < info.outHeight; i++)
                  for (let j = 0; j < info.outWidth; j++) {
                    const r = i * strides + kh - top;
                    const c = j * strides + kw - left;
                    if (r < 0 || c < 0 || r >= 7 || c >= 6) continue;
                    sum += xv[((b * 7 + r) * 6 + c) * 3 + ci]! * dv[((b * info.outHeight + i) * info.outWidth + j) * 4 + co]!;
                  }
              worst = Math.max(worst, Math.abs(sum - got[((kh * 3 + kw) * 3 + ci) * 4 + co]!));
            }
      expect(worst, `strides ${strides}, ${pad}`).toBeLessThan(1e-4);
    }
  });

  it('gives the same weights whether or not training stopped at a checkpoint and resumed from it (Adam state included)', async () => {
    const straight = seedModel();
    await trainEpochs(tf, straight, { train, validation }, { epochs: 2, fromEpoch: 0, batchSize: 64, seed: 9 });

    const first = seedModel();
    await trainEpochs(tf, first, { train, validation }, { epochs: 1, fromEpoch: 0, batchSize: 64, seed: 9 });
    const dir = await writeCheckpoint(first, `${store.root}/ckpt`, 1);
    const resumed = await loadModel(tf, dir);
    expect(resumed.optimizer).toBeTruthy();
    const run = await trainEpochs(tf, resumed, { train, validation }, { epochs: 2, fromEpoch: 1, batchSize: 64, seed: 9 });
    expect(run.loop).toBe('step');
    expect(maxAbsDiff(straight, resumed)).toBeLessThan(1e-4);
  });

  it('keeps pruned weights at zero after every step when given masks (the prune fine-tune)', async () => {
    const model = seedModel();
    const before = model.getWeights()[0]!.dataSync().slice(); // a copy: getWeights gives the live variables
    const keep = new Uint8Array(before.length).map((_, i) => (i % 4 === 0 ? 0 : 1));
    const loop = await createStepLoop(tf, model, { masks: [{ name: 'dense_1/kernel', keep }] });
    if ('unsupported' in loop) throw new Error(loop.unsupported);
    let zerosAfterEachStep = true;
    const rows: LabelledArrays = { x: train.x.subarray(0, 640 * 784), y: train.y.subarray(0, 640), featureShape: train.featureShape };
    await loop.trainPass(rows, {
      batchSize: 64,
      seed: 1,
      onStep: () => {
        void loop.commit({ optimizer: false });
        const w = model.getWeights()[0]!.dataSync();
        for (let i = 0; i < w.length; i += 4) if (w[i] !== 0) zerosAfterEachStep = false;
      },
    });
    expect(loop.steps()).toBe(10);
    expect(zerosAfterEachStep).toBe(true);
    const w = model.getWeights()[0]!.dataSync();
    expect(w.some((v, i) => i % 4 !== 0 && v !== before[i])).toBe(true); // the others trained
    loop.dispose();
  });

  it('says which models it does not train (model.fit then does)', () => {
    expect(planStepLoop(withBatchNorm())).toEqual({ unsupported: expect.stringMatching(/non-trainable weights|BatchNormalization/) });
    const linearOut = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 2 })] });
    expect(planStepLoop(linearOut)).toEqual({ unsupported: expect.stringMatching(/not a dense softmax/) });
  });
});

describe('step loop refusals (model.fit trains instead, and the result says why)', () => {
  it('refuses a compiled loss other than sparse categorical cross-entropy', async () => {
    const model = buildMlp(tf, { ...seedMlpSpec, hiddenUnits: [8] });
    model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
    expect(planStepLoop(model)).toEqual({ unsupported: 'the compiled loss is categoricalCrossentropy, not sparseCategoricalCrossentropy' });
    const fn = buildMlp(tf, { ...seedMlpSpec, hiddenUnits: [8] });
    fn.compile({ optimizer: tf.train.adam(1e-3), loss: (yt: TF.Tensor, yp: TF.Tensor) => tf.losses.meanSquaredError(yt, yp) as TF.Scalar });
    expect(planStepLoop(fn)).toEqual({ unsupported: expect.stringMatching(/^the compiled loss is a loss function/) });
    // The same model compiled as the classifiers are is trained by the step loop.
    const ok = buildMlp(tf, { ...seedMlpSpec, hiddenUnits: [8] });
    compileClassifier(tf, ok, { learningRate: 1e-3 });
    expect(planStepLoop(ok)).not.toHaveProperty('unsupported');
  });

  it('refuses a dense layer on a rank > 2 input, and trainEpochs falls back to model.fit saying why', async () => {
    const model = tf.sequential();
    model.add(tf.layers.reshape({ inputShape: [28, 28], targetShape: [28, 28] }));
    model.add(tf.layers.dense({ units: 4, activation: 'relu', name: 'per_row' })); // applied to each of the 28 rows
    model.add(tf.layers.flatten());
    model.add(tf.layers.dense({ units: 10, activation: 'softmax' }));
    compileClassifier(tf, model, { learningRate: 1e-3 });
    const why = "dense layer per_row gets a rank-3 input (the step loop's dense takes rank 2; add a flatten before it)";
    expect(planStepLoop(model)).toEqual({ unsupported: why });
    const small = { x: train.x.subarray(0, 64 * 784), y: train.y.subarray(0, 64), featureShape: train.featureShape };
    const run = await trainEpochs(tf, model, { train: small, validation: small }, { epochs: 1, fromEpoch: 0, batchSize: 32, seed: 1 });
    expect(run).toMatchObject({ loop: 'model.fit', fitBecause: why });
    expect(run.stats[0]!.trainLoss).toBeGreaterThan(0);
  });
});

describe('step loop state for pruning and replicas', () => {
  it('takes new masks mid-training (zeroing what they prune now and after every step) and new Adam moments', async () => {
    const model = seedModel();
    const loop = await stepLoop(model);
    const rows: LabelledArrays = { x: train.x.subarray(0, 256 * 784), y: train.y.subarray(0, 256), featureShape: train.featureShape };
    await loop.trainPass(rows, { batchSize: 64, seed: 1 });
    const keep = new Uint8Array(784 * 128).map((_, i) => (i % 2 ? 1 : 0));
    loop.setMasks([{ name: 'dense_1/kernel', keep }]);
    expect(
      loop
        .readWeights()
        .get('dense_1/kernel')!
        .every((v, i) => i % 2 === 1 || v === 0),
    ).toBe(true);
    await loop.trainPass(rows, { batchSize: 64, seed: 2 });
    const w = loop.readWeights().get('dense_1/kernel')!;
    expect(w.every((v, i) => i % 2 === 1 || v === 0)).toBe(true);
    expect(w.some((v, i) => i % 2 === 1 && v !== 0)).toBe(true);

    // Moments in and out, flat in the weights' order; the step count goes with them when given.
    const { m, v } = loop.moments();
    expect(m.length).toBe(model.countParams());
    expect(v.some((x) => x > 0)).toBe(true);
    const m2 = m.map((x) => x / 2);
    const v2 = v.map((x) => x * 3);
    loop.setMoments(m2, v2, 100);
    expect(loop.moments().m).toEqual(m2);
    expect(loop.moments().v).toEqual(v2);
    expect(loop.steps()).toBe(100);
    loop.dispose();
  });
});
