// A training loop for the built-in classifiers that is faster than model.fit on every backend:
// the epoch's batches are made into tensors once, before the pass (no per-batch upload, no per-batch
// read-back: the loss and accuracy are tallied on the device and read once per pass), the forward
// and backward passes are written out per layer (dense/conv with bias + activation fused where the
// backend has it, no autodiff tape, no gradient for the input data) and Adam is one fused update
// (step-kernels.ts). Supported: Sequential models of flatten, reshape, dense, conv2d, maxPooling2d and
// dropout ending in a dense softmax, trained with Adam and sparse categorical cross-entropy on
// integer labels, dense layers on rank-2 inputs only; `planStepLoop` says why any other model is
// not, and the caller then uses model.fit (and says why in its result: `fitBecause`).
import type * as TF from '@tensorflow/tfjs';
import { mixSeed, seededRandom } from '../data/rng.js';
import type { Tf } from '../models/mlp.js';
import { ensureConvFilterGrad, stepKernels, type Activation, type AdamState, type ConvAttrs, type FusedAdam, type StepKernels } from './step-kernels.js';
import type { LabelledArrays, LossAccuracy } from './train-loop.js';

type Stage =
  | { kind: 'flatten' }
  | { kind: 'reshape'; to: number[] }
  | { kind: 'dense'; w: number; b?: number; act: Activation }
  | { kind: 'conv'; w: number; b?: number; act: Activation; conv: ConvAttrs }
  | { kind: 'maxpool'; size: [number, number]; conv: ConvAttrs }
  | { kind: 'dropout'; rate: number };

export interface StepPlan {
  stages: Stage[];
  vars: TF.Variable[];
}

const activations = new Set<string>(['linear', 'relu', 'tanh', 'sigmoid', 'elu']);

function pair(v: unknown, what: string): [number, number] {
  const a = Array.isArray(v) ? v : [v, v];
  if (a.length !== 2 || !a.every((n) => Number.isInteger(n))) throw new Error(`${what}: ${JSON.stringify(v)}`);
  return a as [number, number];
}

const sparseXent = new Set(['sparseCategoricalCrossentropy', 'sparse_categorical_crossentropy']);

/**
 * Why the compiled loss is not the one the step loop computes (softmax cross-entropy on integer
 * labels), or undefined when it is. Any other loss (even categorical cross-entropy, which model.fit
 * would feed one-hot labels) would train differently than model.fit does, so it is refused.
 */
export function lossProblem(model: TF.LayersModel): string | undefined {
  const raw = (model as unknown as { loss?: unknown }).loss;
  const one =
    Array.isArray(raw) && raw.length === 1
      ? raw[0]
      : raw && typeof raw === 'object' && !Array.isArray(raw) && Object.keys(raw).length === 1
        ? Object.values(raw)[0]
        : raw;
  if (typeof one === 'string' && sparseXent.has(one)) return undefined;
  const name =
    typeof one === 'string'
      ? one
      : typeof one === 'function'
        ? `a loss function (${one.name || 'anonymous'})`
        : raw === undefined
          ? 'none (not compiled)'
          : JSON.stringify(raw);
  return `the compiled loss is ${name}, not sparseCategoricalCrossentropy`;
}

/** How the step loop would run this model, or why it cannot (then model.fit trains it). */
export function planStepLoop(model: TF.LayersModel): StepPlan | { unsupported: string } {
  if (model.getClassName() !== 'Sequential') return { unsupported: `a ${model.getClassName()} model (only Sequential)` };
  // The rank of the tensor flowing into each layer (batch axis included): the step loop's dense is
  // a matrix product, so it takes rank-2 inputs only (Keras applies a dense layer to the last axis).
  let rank = model.inputs[0]?.shape.length ?? 0;
  const trainable = model.trainableWeights;
  if (trainable.length !== model.weights.length) return { unsupported: 'the model has non-trainable weights' };
  const index = new Map(trainable.map((w, i) => [w, i]));
  const vars = trainable.map((w) => w.read() as TF.Variable);
  const stages: Stage[] = [];
  const layers = model.layers;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i]!;
    const cls = layer.getClassName();
    const cfg = layer.getConfig() as Record<string, unknown>;
    const last = i === layers.length - 1;
    const weightIndex = (name: 'kernel' | 'bias'): number | undefined => {
      const lw = layer.trainableWeights.find((w) => w.originalName.endsWith(`/${name}`));
      return lw ? index.get(lw) : undefined;
    };
    let act = String(cfg.activation ?? 'linear');
    if (last) {
      if (cls !== 'Dense' || act !== 'softmax') return { unsupported: `the last layer is ${cls}${cfg.activation ? ` (${act})` : ''}, not a dense softmax` };
      act = 'linear'; // the softmax is part of the loss
    }
    switch (cls) {
      case 'InputLayer':
        break;
      case 'Flatten':
        stages.push({ kind: 'flatten' });
        rank = 2;
        break;
      case 'Reshape': {
        const to = cfg.targetShape as number[];
        if (!Array.isArray(to) || to.some((d) => !Number.isInteger(d) || d < 1))
          return { unsupported: `reshape layer ${layer.name} has target shape ${JSON.stringify(to)}` };
        stages.push({ kind: 'reshape', to });
        rank = 1 + to.length;
        break;
      }
      case 'Dropout': {
        const rate = Number(cfg.rate);
        if (cfg.noiseShape != null) return { unsupported: `dropout layer ${layer.name} has a noise shape` };
        if (rate > 0) stages.push({ kind: 'dropout', rate });
        break;
      }
      case 'Dense':
      case 'Conv2D': {
        if (!activations.has(act)) return { unsupported: `layer ${layer.name} has activation ${act}` };
        if (cfg.kernelRegularizer || cfg.biasRegularizer || cfg.activityRegularizer || cfg.kernelConstraint || cfg.biasConstraint)
          return { unsupported: `layer ${layer.name} has a regularizer or constraint` };
        const w = weightIndex('kernel');
        const b = weightIndex('bias');
        if (w === undefined) return { unsupported: `layer ${layer.name} has no trainable kernel` };
        if (cls === 'Dense') {
          if (rank !== 2)
            return { unsupported: `dense layer ${layer.name} gets a rank-${rank} input (the step loop's dense takes rank 2; add a flatten before it)` };
          stages.push({ kind: 'dense', w, ...(b !== undefined ? { b } : {}), act: act as Activation });
        } else {
          const dil = pair(cfg.dilationRate ?? 1, 'dilation');
          if (dil[0] !== 1 || dil[1] !== 1) return { unsupported: `conv layer ${layer.name} is dilated` };
          if ((cfg.dataFormat ?? 'channelsLast') !== 'channelsLast') return { unsupported: `conv layer ${layer.name} is channels-first` };
          const pad = cfg.padding === 'same' ? 'same' : cfg.padding === 'valid' ? 'valid' : undefined;
          if (!pad) return { unsupported: `conv layer ${layer.name} has padding ${String(cfg.padding)}` };
          if (rank !== 4) return { unsupported: `conv layer ${layer.name} gets a rank-${rank} input (expected rank 4)` };
          stages.push({
            kind: 'conv',
            w,
            ...(b !== undefined ? { b } : {}),
            act: act as Activation,
            conv: { strides: pair(cfg.strides ?? 1, 'strides'), pad },
          });
        }
        break;
      }
      case 'MaxPooling2D': {
        if (rank !== 4) return { unsupported: `pooling layer ${layer.name} gets a rank-${rank} input (expected rank 4)` };
        if ((cfg.dataFormat ?? 'channelsLast') !== 'channelsLast') return { unsupported: `pooling layer ${layer.name} is channels-first` };
        const size = pair(cfg.poolSize ?? 2, 'pool size');
        const pad = cfg.padding === 'same' ? 'same' : 'valid';
        stages.push({ kind: 'maxpool', size, conv: { strides: pair(cfg.strides ?? size, 'strides'), pad } });
        break;
      }
      default:
        return { unsupported: `layer ${layer.name} is a ${cls}` };
    }
  }
  const dense = stages.filter((s) => s.kind === 'dense' || s.kind === 'conv').length;
  const used = stages.reduce((n, s) => n + (s.kind === 'dense' || s.kind === 'conv' ? 1 + (s.b !== undefined ? 1 : 0) : 0), 0);
  if (used !== vars.length || dense === 0) return { unsupported: 'the model has weights outside its dense and conv layers' };
  const loss = lossProblem(model);
  if (loss) return { unsupported: loss };
  return { stages, vars };
}

export interface StepLoop {
  /** The kernel set in use ('tensorflow', 'wasm', 'cpu', …). */
  backend: string;
  /** One pass over `d` in its order (the caller shuffles), in batches of `batchSize` (the last may be smaller). */
  trainPass(d: LabelledArrays, opts: { batchSize: number; seed: number; onStep?: () => void }): Promise<LossAccuracy>;
  /** Steps taken so far (Adam's iteration count, resumed ones included). */
  steps(): number;
  /**
   * Puts the current weights into the model's variables and (unless `optimizer: false`) the Adam
   * state into model.optimizer: before evaluating, reading or saving the model.
   */
  commit(opts?: { optimizer?: boolean }): Promise<void>;
  /** Continues from the model's variables as they are now (after e.g. model.setWeights). */
  reloadWeights(): void;
  /** The current values of the trainable weights, by name (LayerVariable.originalName); copies. */
  readWeights(): Map<string, Float32Array>;
  /**
   * New pruning masks (gradual pruning): the weights they prune are set to zero now, and every
   * later update keeps them there. Weights without a mask here are no longer masked.
   */
  setMasks(masks: { name: string; keep: Uint8Array }[]): void;
  /** Adam's first and second moments, flat, in the weights' order (averaged across replicas). */
  moments(): { m: Float32Array; v: Float32Array };
  /** Replaces Adam's moments with flat vectors as `moments()` returns them, and its step count when given. */
  setMoments(m: Float32Array, v: Float32Array, iterations?: number): void;
  dispose(): void;
}

interface AdamLike {
  getConfig(): Record<string, unknown>;
  getClassName(): string;
  getWeights(): Promise<{ name: string; tensor: TF.Tensor }[]>;
  setWeights(w: { name: string; tensor: TF.Tensor }[]): Promise<void>;
  accumulatedFirstMoment?: { variable: TF.Variable }[];
  accumulatedSecondMoment?: { variable: TF.Variable }[];
}

/**
 * A step loop over a compiled model (its optimizer must be Adam; its state, e.g. from a
 * checkpoint, is carried over), or why there is none. The model's variables are current only
 * after `commit()`.
 */
export async function createStepLoop(
  tf: Tf,
  model: TF.LayersModel,
  opts: { masks?: { name: string; keep: Uint8Array }[] } = {},
): Promise<StepLoop | { unsupported: string }> {
  const plan = planStepLoop(model);
  if ('unsupported' in plan) return plan;
  const opt = model.optimizer as unknown as AdamLike | undefined;
  if (opt?.getClassName() !== 'Adam') return { unsupported: `optimizer ${opt?.getClassName() ?? 'none'} (only Adam)` };
  const c = opt.getConfig();
  const cfg = { learningRate: Number(c.learningRate), beta1: Number(c.beta1), beta2: Number(c.beta2), epsilon: Number(c.epsilon) };
  let init: AdamState | undefined;
  if ((opt.accumulatedFirstMoment?.length ?? 0) === plan.vars.length) {
    const w = await opt.getWeights();
    const n = plan.vars.length;
    init = {
      iterations: Number(w[0]!.tensor.dataSync()[0]),
      m: w.slice(1, 1 + n).map((x) => x.tensor.dataSync() as Float32Array),
      v: w.slice(1 + n).map((x) => x.tensor.dataSync() as Float32Array),
    };
  }
  if (plan.stages.some((s) => s.kind === 'conv')) ensureConvFilterGrad(tf);
  const kernels = stepKernels(tf);
  // Pruning masks by weight name (LayerVariable.originalName), kept after every step.
  const names = model.trainableWeights.map((w) => w.originalName);
  for (const m of opts.masks ?? []) if (!names.includes(m.name)) return { unsupported: `mask ${m.name} matches no trainable weight` };
  const masks = names.map((n) => opts.masks?.find((m) => m.name === n)?.keep);
  const adam = kernels.adam(plan.vars, cfg, init, masks);
  return {
    backend: kernels.backend,
    steps: () => adam.state().iterations,
    trainPass: (d, o) => trainPass(tf, kernels, plan, adam, d, o),
    reloadWeights: () => adam.loadVariables(),
    readWeights() {
      adam.syncVariables();
      return new Map(plan.vars.map((v, i) => [names[i]!, Float32Array.from(v.dataSync() as Float32Array)]));
    },
    setMasks(next) {
      for (const m of next) if (!names.includes(m.name)) throw new Error(`mask ${m.name} matches no trainable weight (weights: ${names.join(', ')})`);
      const keep = names.map((n) => next.find((m) => m.name === n)?.keep);
      adam.syncVariables();
      tf.tidy(() => {
        plan.vars.forEach((v, i) => {
          if (keep[i]) v.assign(tf.mul(v, tf.tensor(Float32Array.from(keep[i]!), v.shape, 'float32')));
        });
      });
      adam.loadVariables();
      adam.setMasks(keep);
    },
    moments() {
      const s = adam.state();
      return { m: concat(s.m), v: concat(s.v) };
    },
    setMoments(m, v, iterations) {
      adam.setMoments(split(m, plan.vars), split(v, plan.vars), iterations);
    },
    async commit(o = {}) {
      adam.syncVariables();
      if (o.optimizer === false) return;
      const s = adam.state();
      const names = plan.vars.map((v) => v.name);
      // Replace the optimizer's moments with ours (its old ones are freed first).
      [...(opt.accumulatedFirstMoment ?? []), ...(opt.accumulatedSecondMoment ?? [])].forEach((x) => x.variable.dispose());
      const weights = [
        { name: 'iter', tensor: tf.scalar(s.iterations, 'int32') },
        ...s.m.map((m, i) => ({ name: `${names[i]}/m`, tensor: tf.tensor(m, plan.vars[i]!.shape) })),
        ...s.v.map((v, i) => ({ name: `${names[i]}/v`, tensor: tf.tensor(v, plan.vars[i]!.shape) })),
      ];
      await opt.setWeights(weights);
      // setWeights made variables of its own from these.
      tf.dispose(weights.map((w) => w.tensor));
    },
    dispose: () => adam.dispose(),
  };
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function split(flat: Float32Array, vars: TF.Variable[]): Float32Array[] {
  const total = vars.reduce((n, v) => n + v.size, 0);
  if (flat.length !== total) throw new Error(`moment vector has ${flat.length} values, the weights need ${total}`);
  let off = 0;
  return vars.map((v) => flat.subarray(off, (off += v.size)));
}

/** Leading reshapes (flatten, reshape) are done once, when the batches are made. */
function leadingShape(plan: StepPlan, featureShape: number[]): { shape: number[]; skip: number } {
  let shape = featureShape;
  let skip = 0;
  for (const s of plan.stages) {
    if (s.kind === 'flatten') shape = [shape.reduce((a, b) => a * b, 1)];
    else if (s.kind === 'reshape') shape = s.to;
    else break;
    skip++;
  }
  return { shape, skip };
}

async function trainPass(
  tf: Tf,
  k: StepKernels,
  plan: StepPlan,
  adam: FusedAdam,
  d: LabelledArrays,
  o: { batchSize: number; seed: number; onStep?: () => void },
): Promise<LossAccuracy> {
  const n = d.y.length;
  if (n === 0) return { loss: NaN, accuracy: NaN };
  const row = d.featureShape.reduce((a, b) => a * b, 1);
  const { shape, skip } = leadingShape(plan, d.featureShape);
  const stages = plan.stages.slice(skip);
  // The pass's batches, on the device before the first step.
  const batches: { x: TF.Tensor; y: TF.Tensor; labels: Int32Array }[] = [];
  for (let start = 0; start < n; start += o.batchSize) {
    const end = Math.min(n, start + o.batchSize);
    const labels = Int32Array.from(d.y.subarray(start, end));
    batches.push({ x: tf.tensor(d.x.subarray(start * row, end * row), [end - start, ...shape], 'float32'), y: tf.tensor1d(labels, 'int32'), labels });
  }
  const rand = seededRandom(mixSeed(o.seed, 0x5eed));
  const tallies: (() => { lossSum: number; correct: number })[] = [];
  const kept: TF.Tensor[] = [];
  let lastYield = performance.now();
  try {
    for (const batch of batches) {
      const grads = tf.tidy(() => {
        const params = adam.params();
        // Forward, remembering what the backward pass needs.
        const saved: { x: TF.Tensor; y: TF.Tensor; mask?: TF.Tensor }[] = [];
        let h = batch.x;
        for (const s of stages) {
          const x = h;
          switch (s.kind) {
            case 'flatten':
              h = tf.reshape(x, [x.shape[0]!, -1]);
              break;
            case 'reshape':
              h = tf.reshape(x, [x.shape[0]!, ...s.to]);
              break;
            case 'dense':
              h = k.dense(x, params[s.w]!, s.b !== undefined ? params[s.b] : undefined, s.act);
              break;
            case 'conv':
              h = k.conv(x, params[s.w]!, s.b !== undefined ? params[s.b] : undefined, s.act, s.conv);
              break;
            case 'maxpool':
              h = tf.maxPool(x as TF.Tensor4D, s.size, s.conv.strides, s.conv.pad);
              break;
            case 'dropout': {
              const keep = new Float32Array(x.size);
              const scale = 1 / (1 - s.rate);
              for (let i = 0; i < keep.length; i++) keep[i] = rand() >= s.rate ? scale : 0;
              const mask = tf.tensor(keep, x.shape, 'float32');
              h = tf.mul(x, mask);
              saved.push({ x, y: h, mask });
              continue;
            }
          }
          saved.push({ x, y: h });
        }
        const xent = k.softmaxXent(h, batch.y, batch.labels);
        tallies.push(xent.tally);
        kept.push(...xent.keep);
        // Backward: no tape, no gradient for the input batch.
        const g: TF.Tensor[] = new Array(plan.vars.length);
        let dy = xent.dlogits;
        for (let i = stages.length - 1; i >= 0; i--) {
          const s = stages[i]!;
          const { x, y, mask } = saved[i]!;
          const needInput = i > 0;
          switch (s.kind) {
            case 'flatten':
            case 'reshape':
              dy = tf.reshape(dy, x.shape);
              break;
            case 'dropout':
              dy = tf.mul(dy, mask!);
              break;
            case 'maxpool':
              if (needInput)
                dy = tf
                  .engine()
                  .runKernel('MaxPoolGrad', { dy, input: x, output: y }, { filterSize: s.size, strides: s.conv.strides, pad: s.conv.pad }) as TF.Tensor;
              break;
            case 'dense': {
              const dz = k.actGrad(dy, y, s.act);
              g[s.w] = k.kernelGrad(x, dz);
              if (s.b !== undefined) g[s.b] = k.biasGrad(dz);
              if (needInput) dy = k.inputGrad(dz, params[s.w]!);
              break;
            }
            case 'conv': {
              const dz = k.actGrad(dy, y, s.act);
              const w = params[s.w]!;
              g[s.w] = tf
                .engine()
                .runKernel(
                  'Conv2DBackpropFilter',
                  { x, dy: dz },
                  { strides: s.conv.strides, pad: s.conv.pad, dataFormat: 'NHWC', filterShape: w.shape },
                ) as TF.Tensor;
              if (s.b !== undefined) g[s.b] = k.biasGrad(dz);
              if (needInput)
                dy = tf
                  .engine()
                  .runKernel(
                    'Conv2DBackpropInput',
                    { dy: dz, filter: w },
                    { strides: s.conv.strides, pad: s.conv.pad, dataFormat: 'NHWC', inputShape: x.shape },
                  ) as TF.Tensor;
              break;
            }
          }
        }
        return g;
      });
      adam.update(grads);
      tf.dispose(grads);
      o.onStep?.();
      // Let timers (the child's alive messages) and signals run about every 100 ms.
      if (performance.now() - lastYield > 100) {
        await new Promise((r) => setImmediate(r));
        lastYield = performance.now();
      }
    }
    let lossSum = 0;
    let correct = 0;
    for (const t of tallies) {
      const r = t();
      lossSum += r.lossSum;
      correct += r.correct;
    }
    return { loss: lossSum / n, accuracy: correct / n };
  } finally {
    tf.dispose(kept);
    for (const b of batches) {
      b.x.dispose();
      b.y.dispose();
    }
  }
}
