// tfjs layers → ONNX: the converted graph, run by the real onnxruntime-node, gives the tfjs
// model's outputs; uint8 weights are smaller and close; what does not convert says so.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import * as ort from 'onnxruntime-node';
import type * as TF from '@tensorflow/tfjs';
import { loadTf, type LoadedTf } from '../../ml/backend.js';
import { buildFromLayers } from '../../ml/models/layers.js';
import { buildMlp } from '../../ml/models/mlp.js';
import { exportOnnxFolder } from '../../ml/onnx/export.js';
import { tfjsToOnnx, quantizeUint8 } from '../../ml/onnx/from-tfjs.js';
import { readOnnxMeta } from '../../ml/onnx/meta.js';
import { detectFormat, loadModelFolder } from '../../ml/runtime/load-model.js';
import { tempStore } from './fixtures.js';

let loaded: LoadedTf;
let tf: typeof TF;
beforeAll(async () => {
  loaded = await loadTf();
  tf = loaded.tf;
});

async function maxDiff(model: TF.LayersModel, quantize: 'none' | 'uint8'): Promise<{ diff: number; bytes: number; labelsAgree: number }> {
  const g = tfjsToOnnx(model, { quantize });
  const session = await ort.InferenceSession.create(g.bytes);
  try {
    const n = 16;
    const x = tf.randomUniform([n, ...g.sampleShape], 0, 1, 'float32', 7);
    const want = tf.tidy(() => (model.predict(x) as TF.Tensor).dataSync() as Float32Array);
    const out = await session.run({ [g.inputName]: new ort.Tensor('float32', x.dataSync() as Float32Array, [n, ...g.sampleShape]) });
    x.dispose();
    const got = out[g.outputName]!.data as Float32Array;
    expect(got.length).toBe(want.length);
    let diff = 0;
    let labelsAgree = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i]! - got[i]!));
    const c = g.numClasses;
    const arg = (a: Float32Array, r: number) => a.subarray(r * c, (r + 1) * c).reduce((b, v, j, all) => (v > all[b]! ? j : b), 0);
    for (let r = 0; r < n; r++) if (arg(want, r) === arg(got, r)) labelsAgree++;
    return { diff, bytes: g.bytes.length, labelsAgree: labelsAgree / n };
  } finally {
    await session.release();
  }
}

describe('tfjs → ONNX', () => {
  it('the seed MLP (flatten → dense relu → dense softmax) gives the same probabilities in ONNX Runtime', async () => {
    const mlp = buildMlp(tf, { inputShape: [28, 28], hiddenUnits: [128], activation: 'relu', dropout: 0.2, numClasses: 10, seed: 1 });
    const f32 = await maxDiff(mlp, 'none');
    expect(f32.diff).toBeLessThan(1e-5);
    const u8 = await maxDiff(mlp, 'uint8');
    expect(u8.diff).toBeLessThan(0.02);
    expect(u8.bytes).toBeLessThan(f32.bytes / 3);
    console.info(
      `[onnx] seed MLP: float32 ${f32.bytes} B (max |Δp| ${f32.diff.toExponential(1)}), uint8 ${u8.bytes} B (max |Δp| ${u8.diff.toExponential(1)}, labels agree ${u8.labelsAgree})`,
    );
    mlp.dispose();
  });

  it('a conv net (reshape, conv2d same/valid, max pooling, tanh/elu/sigmoid dense) converts with NHWC kept at the edges', async () => {
    const cnn = buildFromLayers(tf, {
      inputShape: [12, 12],
      layers: [
        { type: 'conv2d', filters: 4, kernelSize: 3, strides: 1, padding: 'same', activation: 'relu' },
        { type: 'maxPooling2d', poolSize: 2 },
        { type: 'conv2d', filters: 3, kernelSize: 3, strides: 2, padding: 'valid', activation: 'elu' },
        { type: 'dense', units: 8, activation: 'tanh' },
        { type: 'dense', units: 6, activation: 'sigmoid' },
      ],
      numClasses: 5,
      seed: 3,
    });
    expect((await maxDiff(cnn, 'none')).diff).toBeLessThan(1e-5);
    expect((await maxDiff(cnn, 'uint8')).diff).toBeLessThan(0.02);
    cnn.dispose();
  });

  it('a model without a softmax at the end is marked as logits, and served as probabilities', async () => {
    const m = tf.sequential({
      layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'linear', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) })],
    });
    expect(tfjsToOnnx(m).outputKind).toBe('logits');
    const t = await tempStore();
    try {
      const dir = path.join(t.root, 'logits');
      const meta = await exportOnnxFolder(m, dir);
      expect(meta).toMatchObject({
        format: 'onnx',
        opset: 13,
        output: { kind: 'logits' },
        labels: ['0', '1', '2'],
        quantization: 'none',
        input: { shape: [null, 4], dtype: 'float32', encoding: { kind: 'none' } },
      });
      expect(await detectFormat(dir)).toBe('onnx');
      const served = await loadModelFolder(dir, 'onnx', { tf: () => loadTf() });
      const x = Float32Array.of(1, -2, 0.5, 3);
      const { probabilities } = await served.predict(x, 1);
      const logits = (m.predict(tf.tensor(x, [1, 4])) as TF.Tensor).dataSync();
      const soft = tf.softmax(tf.tensor(logits)).dataSync();
      probabilities.forEach((p, i) => expect(p).toBeCloseTo(soft[i]!, 5));
      expect(served.runtime).toBe(`onnxruntime-node ${ort.env.versions.node} (cpu)`);
      await served.dispose();
    } finally {
      await t.cleanup();
    }
    m.dispose();
  });

  it('CAPSTAN_ONNX_EP=cuda without the CUDA provider libraries falls back to the CPU and says why', async () => {
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'softmax' })] });
    const t = await tempStore();
    try {
      const dir = path.join(t.root, 'cuda');
      await exportOnnxFolder(m, dir);
      const served = await loadModelFolder(dir, 'onnx', { tf: () => loadTf(), onnx: { executionProvider: 'cuda', intraOpThreads: 1 } });
      // No machine here has the CUDA provider (the npm install script that fetches it is skipped).
      expect(served.runtime).toMatch(new RegExp(`^onnxruntime-node ${ort.env.versions.node} \\(cpu; cuda unavailable: .+\\)$`));
      expect((await served.predict(Float32Array.of(1, 2, 3, 4), 1)).classes).toBe(3);
      await served.dispose();
    } finally {
      await t.cleanup();
      m.dispose();
    }
  });

  it('uint8 weights: zero stays exact, values within half a step', () => {
    const w = Float32Array.of(-0.5, 0, 0.25, 1, 0.999);
    const q = quantizeUint8(w);
    const back = Array.from(q.values, (v) => (v - q.zeroPoint) * q.scale);
    expect(back[1]).toBe(0);
    back.forEach((b, i) => expect(Math.abs(b - w[i]!)).toBeLessThanOrEqual(q.scale / 2 + 1e-7));
  });

  it('refuses what it cannot convert, naming the layer', () => {
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3 }), tf.layers.batchNormalization({ name: 'bn' })] });
    expect(() => tfjsToOnnx(m)).toThrow(/cannot convert the model to ONNX: layer bn: BatchNormalization layers do not convert/);
    m.dispose();
  });

  it('capstan-model.json is checked when read', async () => {
    const t = await tempStore();
    try {
      const { writeFile, mkdir } = await import('node:fs/promises');
      const dir = path.join(t.root, 'bad');
      await mkdir(dir, { recursive: true });
      await writeFile(
        path.join(dir, 'capstan-model.json'),
        JSON.stringify({
          format: 'onnx',
          metaVersion: 1,
          opset: 13,
          producer: 'x',
          input: { name: 'x', shape: [28, 28], dtype: 'float32' },
          output: { name: 'y', kind: 'probabilities' },
          labels: ['a'],
          quantization: 'none',
        }),
      );
      await expect(readOnnxMeta(dir)).rejects.toMatchObject({
        code: 'MODEL_META_INVALID',
        message: expect.stringContaining('input.shape: the batch dimension first as null'),
      });
      await writeFile(path.join(dir, 'capstan-model.json'), '{');
      await expect(detectFormat(dir)).rejects.toMatchObject({ code: 'MODEL_META_INVALID' });
      const only = path.join(t.root, 'only-onnx');
      await mkdir(only);
      await writeFile(path.join(only, 'model.onnx'), await readFile(path.join(dir, 'capstan-model.json')));
      await expect(detectFormat(only)).rejects.toMatchObject({ code: 'MODEL_FORMAT_UNKNOWN', message: expect.stringContaining('no capstan-model.json') });
    } finally {
      await t.cleanup();
    }
  });
});
