import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTf } from '../../ml/backend.js';
import { exportModel } from '../../ml/compression/export-model.js';
import { buildDataset, inputsOf, writeDataset, type Dataset, type SplitName } from '../../ml/data/dataset.js';
import { loadModel, saveModel } from '../../ml/models/io.js';
import { buildMlp } from '../../ml/models/mlp.js';

// The Python SDK's own unittest suite (sdk/python/tests), run with the venv of `npm run setup:python`
// (or CAPSTAN_PYTHON), and a dataset written by the TypeScript writer read back by the Python reader.
const root = path.resolve(import.meta.dirname, '../..');
const sdkDir = path.join(root, 'sdk', 'python');
const python = process.env.CAPSTAN_PYTHON ?? path.join(root, '.tools', 'python', 'bin', 'python');

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runPython(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONPATH: sdkDir, PYTHONUNBUFFERED: '1', TF_CPP_MIN_LOG_LEVEL: '3' };
  delete env.CAPSTAN_STAGE_CONTEXT;
  return new Promise((resolve, reject) => {
    const child = spawn(python, args, { cwd: opts.cwd ?? sdkDir, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 240_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let tmp: string;
beforeAll(async () => {
  if (!existsSync(python)) {
    throw new Error(`no Python for the SDK tests at ${python}: run npm run setup:python (or set CAPSTAN_PYTHON to a Python with numpy and tensorflow)`);
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-python-sdk-'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('Python SDK (sdk/python)', () => {
  it('passes its unittest suite (protocol, datasets, Keras callback)', async () => {
    const r = await runPython(['-m', 'unittest', 'discover', '-s', 'tests', '-t', '.', '-v']);
    const output = `${r.stdout}\n${r.stderr}`;
    if (r.code !== 0) throw new Error(`python -m unittest failed (exit ${r.code}) with ${python}:\n${output.slice(-12_000)}`);
    expect(output).toMatch(/\nOK/);
    // The suite skips what needs numpy or TensorFlow when they are absent; here both must be there.
    expect(output, `${python} lacks numpy or tensorflow (npm run setup:python installs both)`).not.toMatch(/skipped '(numpy|tensorflow) is not installed/);
    expect(output).toMatch(/test_trains_checkpoints_prunes_and_resumes .* \.\.\. ok/);
  });

  it('reads datasets written by the TypeScript writer (ml/data/dataset.ts)', async () => {
    const n = 120;
    const pixels = buildDataset({
      featureShape: [3, 4],
      numClasses: 5,
      pool: { x: new Uint8Array(n * 12).map((_, i) => (i * 37 + 11) % 256), y: new Uint8Array(n).map((_, i) => (i * 7) % 5) },
      test: { x: new Uint8Array(30 * 12).map((_, i) => (i * 13) % 256), y: new Uint8Array(30).map((_, i) => i % 5) },
      validationFraction: 0.25,
      seed: 7,
      normalize: 'scale255',
    });
    const table = buildDataset({
      featureShape: [5],
      numClasses: 2,
      pool: { x: new Float32Array(n * 5).map((_, i) => Math.sin(i) * 10 + (i % 5)), y: new Uint8Array(n).map((_, i) => i % 2) },
      validationFraction: 0.2,
      seed: 3,
      normalize: 'zscore',
    });
    const dirs = { pixels: path.join(tmp, 'pixels'), table: path.join(tmp, 'table') };
    await writeDataset(dirs.pixels, pixels, { format: 'test' });
    await writeDataset(dirs.table, table);

    const code = `
import hashlib, json, sys
from capstan_stage.datasets import read_dataset
out = {}
for name, folder in json.loads(sys.argv[1]).items():
    ds = read_dataset(folder)
    splits = {}
    for s in ds.splits:
        x, y = ds.split(s)
        raw_x, raw_y = ds.raw(s)
        splits[s] = {"shape": list(x.shape), "dtype": str(x.dtype), "rawDtype": str(raw_x.dtype), "first": [float(v) for v in x.reshape(-1)[:6]],
                     "inputs": hashlib.sha256(x.tobytes()).hexdigest(), "labels": hashlib.sha256(raw_y.tobytes()).hexdigest(),
                     "y": [int(v) for v in y[:6]], "classCounts": ds.class_counts(s)}
    out[name] = {"featureShape": list(ds.feature_shape), "numClasses": ds.num_classes, "normalization": ds.normalization,
                 "inputRange": list(ds.input_range) if ds.input_range else None, "splits": splits}
print(json.dumps(out))
`;
    const r = await runPython(['-c', code, JSON.stringify(dirs)], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`the Python reader failed (exit ${r.code}):\n${r.stderr.slice(-6000)}`);
    const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<
      string,
      {
        featureShape: number[];
        numClasses: number;
        normalization: unknown;
        inputRange: number[] | null;
        splits: Record<
          string,
          { shape: number[]; dtype: string; rawDtype: string; first: number[]; inputs: string; labels: string; y: number[]; classCounts: number[] }
        >;
      }
    >;

    const expectSame = (py: (typeof got)[string], ds: Dataset, rawDtype: string) => {
      expect(py.featureShape).toEqual(ds.featureShape);
      expect(py.numClasses).toBe(ds.numClasses);
      expect(py.normalization).toEqual(ds.normalization);
      expect(py.inputRange).toEqual(ds.inputRange);
      const names = Object.keys(ds.splits) as SplitName[];
      expect(Object.keys(py.splits).sort()).toEqual([...names].sort());
      for (const name of names) {
        const split = ds.splits[name]!;
        const inputs = inputsOf(ds, split);
        const s = py.splits[name]!;
        expect(s.shape).toEqual([split.count, ...ds.featureShape]);
        expect([s.dtype, s.rawDtype]).toEqual(['float32', rawDtype]);
        expect(s.first).toEqual(Array.from(inputs.subarray(0, 6)));
        // Every model input, bit for bit, and every label.
        expect(s.inputs).toBe(
          createHash('sha256')
            .update(new Uint8Array(inputs.buffer, inputs.byteOffset, inputs.byteLength))
            .digest('hex'),
        );
        expect(s.labels).toBe(createHash('sha256').update(split.y).digest('hex'));
        expect(s.y).toEqual(Array.from(split.y.subarray(0, 6)));
        expect(s.classCounts.reduce((a, b) => a + b, 0)).toBe(split.count);
      }
    };
    expectSame(got.pixels!, pixels, 'uint8');
    expectSame(got.table!, table, 'float32');
    expect(got.pixels!.normalization).toEqual({ kind: 'scale', factor: 1 / 255 });
    expect((got.table!.normalization as { kind: string }).kind).toBe('zscore');
    expect(got.pixels!.splits.test!.shape).toEqual([30, 3, 4]);
  });

  it('reads TensorFlow.js models written by the TypeScript side; Keras with those weights predicts what tfjs predicts', async () => {
    const { tf } = await loadTf();
    const model = buildMlp(tf, { inputShape: [3, 4], hiddenUnits: [6], activation: 'relu', dropout: 0, numClasses: 5, seed: 9 });
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'sparseCategoricalCrossentropy' });
    const rows = Float32Array.from({ length: 8 * 12 }, (_, i) => Math.sin(i * 0.7));
    const x = tf.tensor(rows, [8, 3, 4]);
    const y = tf.tensor1d([0, 1, 2, 3, 4, 0, 1, 2], 'float32');
    await model.fit(x, y, { epochs: 2, batchSize: 4, shuffle: false, verbose: 0 });
    model.setUserDefinedMetadata({ capstan: { inputShape: [3, 4], numClasses: 5 } });
    const dirs = { checkpoint: path.join(tmp, 'checkpoint'), float: path.join(tmp, 'model'), uint8: path.join(tmp, 'model-uint8') };
    await saveModel(model, dirs.checkpoint, { includeOptimizer: true }); // as pretrain's checkpoints: Adam's state too
    await saveModel(model, dirs.float);
    await exportModel(tf, { sourceDir: dirs.float, destDir: dirs.uint8, quantize: 'uint8' }); // as prune-quantize / deploy
    const predictions = (model.predict(x.slice([0, 0, 0], [4, 3, 4])) as import('@tensorflow/tfjs').Tensor).arraySync() as number[][];
    const weightsOf = (m: import('@tensorflow/tfjs').LayersModel) =>
      m.getWeights().map((w) => {
        const v = w.dataSync() as Float32Array;
        return {
          shape: w.shape,
          sha256: createHash('sha256')
            .update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
            .digest('hex'),
        };
      });
    const expected = { checkpoint: weightsOf(model), float: weightsOf(model), uint8: weightsOf(await loadModel(tf, dirs.uint8)) };
    x.dispose();
    y.dispose();

    const code = `
import hashlib, json, sys
import numpy as np
from capstan_stage.tfjs import read_tfjs_model
dirs, rows = json.loads(sys.argv[1]), np.array(json.loads(sys.argv[2]), dtype=np.float32).reshape(-1, 3, 4)
out = {}
for name, folder in dirs.items():
    m = read_tfjs_model(folder)
    out[name] = {"names": list(m.weights), "optimizer": len(m.optimizer_weights), "metadata": m.metadata, "format": m.format,
                 "weights": [{"shape": list(w.shape), "sha256": hashlib.sha256(np.ascontiguousarray(w, dtype=np.float32).tobytes()).hexdigest()} for w in m.weight_list()]}
import keras
k = keras.Sequential([keras.Input((3, 4)), keras.layers.Flatten(), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(5, activation="softmax")])
k.set_weights(read_tfjs_model(dirs["float"]).weight_list())
out["predictions"] = k.predict(rows[:4], verbose=0).tolist()
print(json.dumps(out))
`;
    const r = await runPython(['-c', code, JSON.stringify(dirs), JSON.stringify(Array.from(rows))], { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`the Python model reader failed (exit ${r.code}):\n${r.stderr.slice(-6000)}`);
    const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<
      'checkpoint' | 'float' | 'uint8',
      { names: string[]; optimizer: number; metadata: unknown; format: string; weights: { shape: number[]; sha256: string }[] }
    > & { predictions: number[][] };
    for (const kind of ['checkpoint', 'float', 'uint8'] as const) {
      expect(got[kind].names).toEqual(['dense_1/kernel', 'dense_1/bias', 'output/kernel', 'output/bias']);
      expect(got[kind].format).toBe('layers-model');
      expect(got[kind].metadata).toEqual({ capstan: { inputShape: [3, 4], numClasses: 5 } });
      // Bit for bit what tfjs decodes (the uint8 copy dequantized exactly as tfjs does).
      expect(got[kind].weights).toEqual(expected[kind]);
    }
    expect(got.checkpoint.optimizer).toBeGreaterThan(0); // Adam's step and moments, kept apart from the model's weights
    expect([got.float.optimizer, got.uint8.optimizer]).toEqual([0, 0]);
    expect(got.predictions.length).toBe(4);
    got.predictions.forEach((row, i) => row.forEach((p, j) => expect(p).toBeCloseTo(predictions[i]![j]!, 5)));
  });
});
