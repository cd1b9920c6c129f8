// The few operations the step loop (step-loop.ts) needs, per backend, with as few kernel calls as
// each backend allows:
//  - native ('tensorflow'): TensorFlow's own ops through the tfjs-node binding — BiasAdd,
//    ReluGrad/TanhGrad/SigmoidGrad/EluGrad, BiasAddGrad, SparseSoftmaxCrossEntropyWithLogits (loss
//    and gradient in one op) and ResourceApplyAdam on resource variables (one op per weight);
//  - wasm and cpu: fused matMul/conv2d with bias + activation (XNNPACK on wasm), the softmax
//    cross-entropy in JavaScript on the (small) logits, and Adam as one JavaScript loop over the
//    weights' own memory (no tensor ops at all).
// Nothing here runs at import time; `stepKernels(tf)` picks the set for the loaded backend.
import type * as TF from '@tensorflow/tfjs';
import type { Tf } from '../models/mlp.js';
import { asTensorInfo, jsBackendInternals, kernelAttrs, nativeBackendInternals, type OpAttr } from './tfjs-internals.js';

export type Activation = 'linear' | 'relu' | 'tanh' | 'sigmoid' | 'elu';

export interface ConvAttrs {
  strides: [number, number];
  pad: 'same' | 'valid';
}

export interface AdamConfig {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
}

/** Adam state in the tfjs optimizer's order: steps taken, first and second moments per weight. */
export interface AdamState {
  iterations: number;
  m: Float32Array[];
  v: Float32Array[];
}

/** Adam over a fixed list of weights. */
export interface FusedAdam {
  /** The weights' values for this step's forward pass (the variables themselves, or reads of them). */
  params(): TF.Tensor[];
  /** One Adam step with these gradients (same order as the weights). */
  update(grads: TF.Tensor[]): void;
  /** Writes the current values into the tfjs variables (a no-op where they are updated in place). */
  syncVariables(): void;
  /** Takes the tfjs variables' values as the current ones (after something else set them). */
  loadVariables(): void;
  state(): AdamState;
  /**
   * Replaces the first and second moments (same order and sizes as the weights), and the step
   * count when given. Multi-device fit averages them across replicas with the weights.
   */
  setMoments(m: Float32Array[], v: Float32Array[], iterations?: number): void;
  /**
   * Replaces the keep-masks applied after every update (`undefined` = no mask for that weight). The
   * weights themselves are not touched: the caller zeroes the newly pruned ones (gradual pruning).
   */
  setMasks(masks: (Uint8Array | undefined)[]): void;
  dispose(): void;
}

export interface SoftmaxXent {
  /** d(mean loss)/d(logits). */
  dlogits: TF.Tensor;
  /** Summed loss and correct count of the batch, for the epoch's metrics; read once per epoch. */
  tally: () => { lossSum: number; correct: number };
  /** Tensors to keep until the tally is read (native); disposed by the caller after it. */
  keep: TF.Tensor[];
}

export interface StepKernels {
  backend: string;
  dense(x: TF.Tensor, w: TF.Tensor, b: TF.Tensor | undefined, act: Activation): TF.Tensor;
  conv(x: TF.Tensor, w: TF.Tensor, b: TF.Tensor | undefined, act: Activation, c: ConvAttrs): TF.Tensor;
  /** dL/d(pre-activation) from dL/dy and the activation's output y. */
  actGrad(dy: TF.Tensor, y: TF.Tensor, act: Activation): TF.Tensor;
  /** xᵀ·dz: a dense kernel's gradient. */
  kernelGrad(x: TF.Tensor, dz: TF.Tensor): TF.Tensor;
  /** dz·wᵀ: the gradient for a dense layer's input. */
  inputGrad(dz: TF.Tensor, w: TF.Tensor): TF.Tensor;
  /** Sum over every axis but the last. */
  biasGrad(dy: TF.Tensor): TF.Tensor;
  /** Softmax cross-entropy from logits [B, C] and integer labels (also kept in JS). */
  softmaxXent(logits: TF.Tensor, labels: TF.Tensor, labelValues: Uint8Array | Int32Array): SoftmaxXent;
  /** `masks[i]`, when given, is a 0/1 keep-mask of weight i, applied after every update (weight ← weight × mask). */
  adam(vars: TF.Variable[], cfg: AdamConfig, init?: AdamState, masks?: (Uint8Array | undefined)[]): FusedAdam;
}

export function stepKernels(tf: Tf): StepKernels {
  const name = tf.getBackend();
  if (name === 'tensorflow') return nativeKernels(tf);
  if (name === 'wasm' || name === 'cpu') return jsKernels(tf, name);
  return genericKernels(tf, name);
}

// ---------------------------------------------------------------- shared tfjs-op implementations

function applyAct(tf: Tf, y: TF.Tensor, act: Activation): TF.Tensor {
  switch (act) {
    case 'linear':
      return y;
    case 'relu':
      return tf.relu(y);
    case 'tanh':
      return tf.tanh(y);
    case 'sigmoid':
      return tf.sigmoid(y);
    case 'elu':
      return tf.elu(y);
  }
}

function genericActGrad(tf: Tf, dy: TF.Tensor, y: TF.Tensor, act: Activation): TF.Tensor {
  switch (act) {
    case 'linear':
      return dy;
    case 'relu':
      return tf.mul(dy, tf.step(y));
    case 'tanh':
      return tf.mul(dy, tf.sub(1, tf.square(y)));
    case 'sigmoid':
      return tf.mul(dy, tf.mul(y, tf.sub(1, y)));
    case 'elu':
      return tf.engine().runKernel('EluGrad', { dy, y }) as TF.Tensor;
  }
}

const fusable = new Set<Activation>(['linear', 'relu', 'elu', 'sigmoid']);

function fusedDense(tf: Tf, x: TF.Tensor, w: TF.Tensor, b: TF.Tensor | undefined, act: Activation): TF.Tensor {
  if (fusable.has(act)) return tf.fused.matMul({ a: x as TF.Tensor2D, b: w as TF.Tensor2D, ...(b ? { bias: b } : {}), activation: act as 'relu' });
  return applyAct(tf, tf.fused.matMul({ a: x as TF.Tensor2D, b: w as TF.Tensor2D, ...(b ? { bias: b } : {}) }), act);
}

function fusedConv(tf: Tf, x: TF.Tensor, w: TF.Tensor, b: TF.Tensor | undefined, act: Activation, c: ConvAttrs): TF.Tensor {
  const base = { x: x as TF.Tensor4D, filter: w as TF.Tensor4D, strides: c.strides, pad: c.pad, ...(b ? { bias: b } : {}) };
  if (fusable.has(act)) return tf.fused.conv2d({ ...base, activation: act as 'relu' });
  return applyAct(tf, tf.fused.conv2d(base), act);
}

/** Loss and gradient with tfjs ops; the tally reads the kept tensors once per epoch. */
function opsSoftmaxXent(tf: Tf, logits: TF.Tensor, labels: TF.Tensor, numClasses: number): SoftmaxXent {
  const batch = logits.shape[0]!;
  const onehot = tf.oneHot(tf.cast(labels, 'int32') as TF.Tensor1D, numClasses);
  const logp = tf.logSoftmax(logits);
  const dlogits = tf.div(tf.sub(tf.exp(logp), onehot), batch);
  const lossSum = tf.neg(tf.sum(tf.mul(logp, onehot)));
  const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), tf.cast(labels, 'int32')), 'int32'));
  return { dlogits, keep: [lossSum, correct], tally: () => ({ lossSum: lossSum.dataSync()[0]!, correct: correct.dataSync()[0]! }) };
}

/** Adam as tfjs does it (tfjs AdamOptimizer.applyGradients), with tensor ops: the fallback. */
function opsAdam(tf: Tf, vars: TF.Variable[], cfg: AdamConfig, init?: AdamState, masks?: (Uint8Array | undefined)[]): FusedAdam {
  let t = init?.iterations ?? 0;
  const maskTensors = (ms?: (Uint8Array | undefined)[]) => vars.map((v, i) => (ms?.[i] ? tf.keep(tf.tensor(Float32Array.from(ms[i]!), v.shape)) : undefined));
  let keep = maskTensors(masks);
  const m = vars.map((v, i) => tf.variable(init ? tf.tensor(init.m[i]!, v.shape) : tf.zerosLike(v), false));
  const s = vars.map((v, i) => tf.variable(init ? tf.tensor(init.v[i]!, v.shape) : tf.zerosLike(v), false));
  return {
    params: () => vars,
    update(grads) {
      t++;
      const c1 = 1 - cfg.beta1 ** t;
      const c2 = 1 - cfg.beta2 ** t;
      tf.tidy(() => {
        grads.forEach((g, i) => {
          const mi = tf.add(tf.mul(m[i]!, cfg.beta1), tf.mul(g, 1 - cfg.beta1));
          const vi = tf.add(tf.mul(s[i]!, cfg.beta2), tf.mul(tf.square(g), 1 - cfg.beta2));
          m[i]!.assign(mi);
          s[i]!.assign(vi);
          const next = tf.sub(vars[i]!, tf.mul(tf.div(tf.div(mi, c1), tf.add(tf.sqrt(tf.div(vi, c2)), cfg.epsilon)), cfg.learningRate));
          vars[i]!.assign(keep[i] ? tf.mul(next, keep[i]!) : next);
        });
      });
    },
    syncVariables: () => undefined,
    loadVariables: () => undefined,
    state: () => ({ iterations: t, m: m.map((x) => x.dataSync() as Float32Array), v: s.map((x) => x.dataSync() as Float32Array) }),
    setMoments(mv, vv, iterations) {
      if (iterations !== undefined) t = iterations;
      tf.tidy(() => {
        vars.forEach((x, i) => {
          m[i]!.assign(tf.tensor(mv[i]!, x.shape));
          s[i]!.assign(tf.tensor(vv[i]!, x.shape));
        });
      });
    },
    setMasks(ms) {
      keep.forEach((x) => x?.dispose());
      keep = maskTensors(ms);
    },
    dispose() {
      m.forEach((x) => x.dispose());
      s.forEach((x) => x.dispose());
      keep.forEach((x) => x?.dispose());
    },
  };
}

function genericKernels(tf: Tf, backend: string): StepKernels {
  return {
    backend,
    dense: (x, w, b, act) => fusedDense(tf, x, w, b, act),
    conv: (x, w, b, act, c) => fusedConv(tf, x, w, b, act, c),
    actGrad: (dy, y, act) => genericActGrad(tf, dy, y, act),
    // An explicit transpose, then a plain matMul: the wasm backend's transposed matMul is ~7× slower.
    kernelGrad: (x, dz) => tf.matMul(tf.transpose(x as TF.Tensor2D), dz as TF.Tensor2D),
    inputGrad: (dz, w) => tf.matMul(dz as TF.Tensor2D, tf.transpose(w as TF.Tensor2D)),
    biasGrad: (dy) =>
      tf.sum(
        dy,
        dy.shape.slice(0, -1).map((_, i) => i),
      ),
    softmaxXent: (logits, labels) => opsSoftmaxXent(tf, logits, labels, logits.shape[1]!),
    adam: (vars, cfg, init, masks) => opsAdam(tf, vars, cfg, init, masks),
  };
}

// ---------------------------------------------------------------- wasm and cpu: JavaScript where it is cheaper

/** Rows whose largest logit is at the label. */
function countCorrect(z: Float32Array, classes: number, y: Uint8Array | Int32Array): number {
  let correct = 0;
  for (let i = 0; i < y.length; i++) {
    let arg = 0;
    for (let c = 1; c < classes; c++) if (z[i * classes + c]! > z[i * classes + arg]!) arg = c;
    if (arg === y[i]) correct++;
  }
  return correct;
}

function jsKernels(tf: Tf, backend: 'wasm' | 'cpu'): StepKernels {
  // Checked here, when a backend's kernels are made: a tfjs that moved them fails now, by name.
  const mem = jsBackendInternals(tf, backend);
  return {
    ...genericKernels(tf, backend),
    softmaxXent(logits, _labels, y) {
      const [batch, classes] = logits.shape as [number, number];
      const z = logits.dataSync() as Float32Array; // a copy of B×C values; CPU backends compute synchronously
      const d = new Float32Array(z.length);
      let lossSum = 0;
      let correct = 0;
      for (let i = 0; i < batch; i++) {
        const row = i * classes;
        let max = -Infinity;
        let arg = 0;
        for (let c = 0; c < classes; c++)
          if (z[row + c]! > max) {
            max = z[row + c]!;
            arg = c;
          }
        let sum = 0;
        for (let c = 0; c < classes; c++) sum += Math.exp(z[row + c]! - max);
        const label = y[i]!;
        lossSum += Math.log(sum) - (z[row + label]! - max);
        if (arg === label) correct++;
        for (let c = 0; c < classes; c++) d[row + c] = (Math.exp(z[row + c]! - max) / sum - (c === label ? 1 : 0)) / batch;
      }
      return { dlogits: tf.tensor2d(d, [batch, classes]), keep: [], tally: () => ({ lossSum, correct }) };
    },
    adam(vars, cfg, init, masks) {
      // Each variable gets a private copy of its data, so writing it in place (cpu) touches nothing else.
      const privatize = () => {
        if (backend === 'cpu')
          for (const v of vars) {
            const own = tf.tensor(v.dataSync().slice(), v.shape, 'float32');
            v.assign(own);
            own.dispose();
          }
      };
      privatize();
      let t = init?.iterations ?? 0;
      let keeps = masks;
      const m = vars.map((v, i) => (init ? Float32Array.from(init.m[i]!) : new Float32Array(v.size)));
      const s = vars.map((v, i) => (init ? Float32Array.from(init.v[i]!) : new Float32Array(v.size)));
      const { learningRate: lr, beta1: b1, beta2: b2, epsilon: eps } = cfg;
      return {
        params: () => vars,
        update(grads) {
          t++;
          const c1 = 1 - b1 ** t;
          const c2 = 1 - b2 ** t;
          for (let k = 0; k < vars.length; k++) {
            const v = vars[k]!;
            // wasm caches packed weights (XNNPACK) by tensor, so a weight written in place would not be
            // seen by the next matMul: write the new values into a fresh buffer and swap it in. The cpu
            // backend has no such cache: there the weights are updated in place.
            const fresh = mem.freshTensor?.(v.shape);
            // Views are taken after the allocation (which may grow, and so move, the wasm heap).
            const old = mem.memoryView(v);
            const p = fresh ? mem.memoryView(fresh) : old;
            const g = mem.memoryView(grads[k]!);
            const mk = m[k]!;
            const sk = s[k]!;
            for (let i = 0; i < p.length; i++) {
              const gi = g[i]!;
              const mi = b1 * mk[i]! + (1 - b1) * gi;
              const vi = b2 * sk[i]! + (1 - b2) * gi * gi;
              mk[i] = mi;
              sk[i] = vi;
              p[i] = old[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
            }
            const keep = keeps?.[k];
            if (keep) for (let i = 0; i < p.length; i++) if (keep[i] === 0) p[i] = 0;
            if (fresh) {
              v.assign(fresh);
              fresh.dispose();
            }
          }
        },
        syncVariables: () => undefined,
        loadVariables: privatize,
        state: () => ({ iterations: t, m: m.map((x) => x.slice()), v: s.map((x) => x.slice()) }),
        setMoments(mv, vv, iterations) {
          if (iterations !== undefined) t = iterations;
          vars.forEach((_, i) => {
            m[i]!.set(mv[i]!);
            s[i]!.set(vv[i]!);
          });
        },
        setMasks(ms) {
          keeps = ms;
        },
        dispose: () => undefined,
      };
    },
  };
}

// ---------------------------------------------------------------- native: TensorFlow ops by name

let resourceCounter = 0;

function nativeKernels(tf: Tf): StepKernels {
  const be = nativeBackendInternals(tf);
  const B = be.binding;
  const T: OpAttr = { name: 'T', type: B.TF_ATTR_TYPE!, value: B.TF_FLOAT };
  const nhwc: OpAttr = { name: 'data_format', type: B.TF_ATTR_STRING!, value: 'NHWC' };
  const dtypeAttr: OpAttr = { name: 'dtype', type: B.TF_ATTR_TYPE!, value: B.TF_FLOAT };
  const one = (op: string, inputs: TF.Tensor[], attrs: OpAttr[] = [T]) => be.executeSingleOutput(op, attrs, inputs);
  const act = (y: TF.Tensor, a: Activation) => (a === 'linear' ? y : one({ relu: 'Relu', tanh: 'Tanh', sigmoid: 'Sigmoid', elu: 'Elu' }[a], [y]));
  const inv = new Map<number, TF.Tensor>();
  const invBatch = (n: number) => {
    let s = inv.get(n);
    if (!s) inv.set(n, (s = tf.keep(tf.scalar(1 / n))));
    return s;
  };
  return {
    backend: 'tensorflow',
    dense(x, w, b, a) {
      let y = one(
        'MatMul',
        [x, w],
        [T, { name: 'transpose_a', type: B.TF_ATTR_BOOL!, value: false }, { name: 'transpose_b', type: B.TF_ATTR_BOOL!, value: false }],
      );
      if (b) y = one('BiasAdd', [y, b], [T, nhwc]);
      return act(y, a);
    },
    conv(x, w, b, a, c) {
      let y = tf.conv2d(x as TF.Tensor4D, w as TF.Tensor4D, c.strides, c.pad) as TF.Tensor;
      if (b) y = one('BiasAdd', [y, b], [T, nhwc]);
      return act(y, a);
    },
    actGrad(dy, y, a) {
      switch (a) {
        case 'linear':
          return dy;
        case 'relu':
          return one('ReluGrad', [dy, y]);
        case 'elu':
          return one('EluGrad', [dy, y]);
        case 'tanh':
          return one('TanhGrad', [y, dy]);
        case 'sigmoid':
          return one('SigmoidGrad', [y, dy]);
      }
    },
    kernelGrad: (x, dz) =>
      one('MatMul', [x, dz], [T, { name: 'transpose_a', type: B.TF_ATTR_BOOL!, value: true }, { name: 'transpose_b', type: B.TF_ATTR_BOOL!, value: false }]),
    inputGrad: (dz, w) =>
      one('MatMul', [dz, w], [T, { name: 'transpose_a', type: B.TF_ATTR_BOOL!, value: false }, { name: 'transpose_b', type: B.TF_ATTR_BOOL!, value: true }]),
    biasGrad: (dy) => one('BiasAddGrad', [dy], [T, nhwc]),
    softmaxXent(logits, labels, y) {
      const [loss, back] = be.executeMultipleOutputs(
        'SparseSoftmaxCrossEntropyWithLogits',
        [T, { name: 'Tlabels', type: B.TF_ATTR_TYPE!, value: B.TF_INT32 }],
        [logits, labels],
        2,
      ) as [TF.Tensor, TF.Tensor];
      const dlogits = tf.mul(back, invBatch(logits.shape[0]!));
      back.dispose();
      // The loss and logits stay on the device until the epoch's metrics are read.
      tf.keep(loss);
      tf.keep(logits);
      return {
        dlogits,
        keep: [loss, logits],
        tally: () => {
          let lossSum = 0;
          for (const v of loss.dataSync()) lossSum += v;
          return { lossSum, correct: countCorrect(logits.dataSync() as Float32Array, logits.shape[1]!, y) };
        },
      };
    },
    adam(vars, cfg, init, masks) {
      const maskTensors = (ms?: (Uint8Array | undefined)[]) =>
        vars.map((v, i) => (ms?.[i] ? tf.keep(tf.tensor(Float32Array.from(ms[i]!), v.shape)) : undefined));
      let keep = maskTensors(masks);
      const shapeAttr = (shape: number[]): OpAttr => ({ name: 'shape', type: B.TF_ATTR_SHAPE!, value: shape });
      const handle = (shape: number[], value: TF.Tensor) => {
        const h = be.executeSingleOutput(
          'VarHandleOp',
          [
            dtypeAttr,
            shapeAttr(shape),
            { name: 'container', type: B.TF_ATTR_STRING!, value: '' },
            { name: 'shared_name', type: B.TF_ATTR_STRING!, value: `capstan_adam_${process.pid}_${++resourceCounter}` },
          ],
          [],
        );
        be.executeMultipleOutputs('AssignVariableOp', [dtypeAttr], [h, value], 0);
        return tf.keep(h);
      };
      const vh = vars.map((v) => handle(v.shape, v));
      const mh = vars.map((v, i) => tf.tidy(() => handle(v.shape, init ? tf.tensor(init.m[i]!, v.shape) : tf.zerosLike(v))));
      const sh = vars.map((v, i) => tf.tidy(() => handle(v.shape, init ? tf.tensor(init.v[i]!, v.shape) : tf.zerosLike(v))));
      const [lr, b1, b2] = [cfg.learningRate, cfg.beta1, cfg.beta2].map((n) => tf.keep(tf.scalar(n))) as [TF.Tensor, TF.Tensor, TF.Tensor];
      const attrs: OpAttr[] = [T, { name: 'use_locking', type: B.TF_ATTR_BOOL!, value: false }, { name: 'use_nesterov', type: B.TF_ATTR_BOOL!, value: false }];
      const read = (h: TF.Tensor) => be.executeSingleOutput('ReadVariableOp', [dtypeAttr], [h]);
      let t = init?.iterations ?? 0;
      return {
        params: () => vh.map(read),
        update(grads) {
          t++;
          tf.tidy(() => {
            const p1 = tf.scalar(cfg.beta1 ** t);
            const p2 = tf.scalar(cfg.beta2 ** t);
            // TensorFlow adds epsilon to sqrt(v), tfjs to sqrt(v / (1 − β₂ᵗ)): scaling it by
            // sqrt(1 − β₂ᵗ) makes this step exactly tfjs's (and Keras's legacy) Adam.
            const epsT = tf.scalar(cfg.epsilon * Math.sqrt(1 - cfg.beta2 ** t));
            grads.forEach((g, i) => be.executeMultipleOutputs('ResourceApplyAdam', attrs, [vh[i]!, mh[i]!, sh[i]!, p1, p2, lr, b1, b2, epsT, g], 0));
            keep.forEach((k, i) => {
              if (k) be.executeMultipleOutputs('AssignVariableOp', [dtypeAttr], [vh[i]!, one('Mul', [read(vh[i]!), k])], 0);
            });
          });
        },
        syncVariables() {
          vars.forEach((v, i) => {
            const r = read(vh[i]!);
            v.assign(r);
            r.dispose();
          });
        },
        loadVariables() {
          vars.forEach((v, i) => be.executeMultipleOutputs('AssignVariableOp', [dtypeAttr], [vh[i]!, v], 0));
        },
        state: () => ({
          iterations: t,
          m: mh.map((h) => tf.tidy(() => read(h).dataSync() as Float32Array)),
          v: sh.map((h) => tf.tidy(() => read(h).dataSync() as Float32Array)),
        }),
        setMoments(mv, vv, iterations) {
          if (iterations !== undefined) t = iterations;
          tf.tidy(() => {
            vars.forEach((x, i) => {
              be.executeMultipleOutputs('AssignVariableOp', [dtypeAttr], [mh[i]!, tf.tensor(mv[i]!, x.shape)], 0);
              be.executeMultipleOutputs('AssignVariableOp', [dtypeAttr], [sh[i]!, tf.tensor(vv[i]!, x.shape)], 0);
            });
          });
        },
        setMasks(ms) {
          keep.forEach((x) => x?.dispose());
          keep = maskTensors(ms);
        },
        dispose() {
          for (const h of [...vh, ...mh, ...sh]) {
            be.executeMultipleOutputs('DestroyResourceOp', [{ name: 'ignore_lookup_error', type: B.TF_ATTR_BOOL!, value: true }], [h], 0);
            h.dispose();
          }
          [lr, b1, b2].forEach((x) => x.dispose());
          keep.forEach((x) => x?.dispose());
        },
      };
    },
  };
}

/**
 * The wasm backend has no Conv2DBackpropFilter kernel (so even model.fit cannot train a conv net
 * on it). This registers one built from its fast Conv2D: the filter gradient is a convolution of
 * the (padded) input, batch and channels swapped, with the output gradient as the filter, dilated by
 * the stride. A no-op on backends that have the kernel.
 */
export function ensureConvFilterGrad(tf: Tf): void {
  const backendName = tf.getBackend();
  if (tf.getKernel('Conv2DBackpropFilter', backendName)) return;
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName,
    kernelFunc: ({ inputs, attrs }) => {
      const { x, dy } = inputs as { x: TF.Tensor4D; dy: TF.Tensor4D };
      const { strides, pad, filterShape, dimRoundingMode } = kernelAttrs<{
        strides: [number, number] | number;
        pad: 'same' | 'valid' | number;
        filterShape: [number, number, number, number];
        dimRoundingMode?: 'floor' | 'round' | 'ceil';
      }>(attrs);
      const info = tf.backend_util.computeConv2DInfo(x.shape, filterShape, strides, 1, pad as 'same' | 'valid', dimRoundingMode);
      const { top, bottom, left, right } = info.padInfo;
      return asTensorInfo(
        tf.tidy(() => {
          const xp =
            top || bottom || left || right
              ? tf.pad(x, [
                  [0, 0],
                  [top, bottom],
                  [left, right],
                  [0, 0],
                ])
              : x;
          const input = tf.transpose(xp, [3, 1, 2, 0]); // [Cin, Hp, Wp, B]
          const filter = tf.transpose(dy, [1, 2, 0, 3]); // [Ho, Wo, B, Cout]
          const full = tf.conv2d(input, filter, 1, 'valid', 'NHWC', [info.strideHeight, info.strideWidth]); // [Cin, ≥K1, ≥K2, Cout]
          const [k1, k2] = filterShape;
          const cut = full.shape[1] === k1 && full.shape[2] === k2 ? full : tf.slice(full, [0, 0, 0, 0], [-1, k1, k2, -1]);
          return tf.transpose(cut, [1, 2, 0, 3]);
        }),
      );
    },
  });
}
