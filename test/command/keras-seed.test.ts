// The seed's own Keras code as a pipeline (pipelines/keras-seed.yaml): core:data-prep → the
// Python stage seed:keras-mlp (stages/keras-seed, TensorFlow 2.21 under MirroredStrategy over two
// logical CPU devices, the capstan_stage SDK) → the Python stage seed:onnx-export (stages/onnx-export:
// ONNX export + uint8 with ONNX Runtime's quantizer) → core:deploy (served by ONNX Runtime) →
// core:roi-ledger, on the real stack, with a SIGKILL of the Python process in the middle of its
// training. The deployed model.onnx is then loaded independently with onnxruntime-node and scored
// on the 10k MNIST test images.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { loadSplit } from '../../ml/evaluation/evaluate.js';
import { BUNDLED_STAGES_DIR } from '../../plugins/builtins.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { StageRegistry } from '../../plugins/registry.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
beforeAll(async () => {
  const bundled = new StageRegistry();
  const loaded = await loadExternalPlugins(bundled, [BUNDLED_STAGES_DIR], { cwd: process.cwd() });
  expect(loaded).toContain('seed:keras-mlp@1.0.0');
  expect(loaded).toContain('seed:onnx-export@1.0.0');
  stack = await startTestStack({
    plugins: [dataPrepStage(), roiLedgerStage(), deployStage(), bundled.get('seed:keras-mlp')!, bundled.get('seed:onnx-export')!],
  });
});
afterAll(async () => {
  await stack?.close();
});

/** Pids of the Python processes running the keras-seed script (not its launcher, whose argv names it too). */
function kerasProcesses(): number[] {
  const script = path.join(BUNDLED_STAGES_DIR, 'keras-seed', 'train.py');
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const argv = readFileSync(`/proc/${n}/cmdline`, 'utf8').split('\0');
        return argv.includes(script) && !argv.some((a) => a.endsWith('launcher.mjs'));
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('pipelines/keras-seed.yaml', () => {
  it('completes with a mirrored Keras model, per-epoch curves, a SIGKILLed attempt resumed from its checkpoint, and a uint8 ONNX model deployed that onnxruntime-node scores as the registry says', {
    timeout: 600_000,
  }, async () => {
    const spec = YAML.parse(await readFile(path.resolve(import.meta.dirname, '../../pipelines/keras-seed.yaml'), 'utf8'));
    expect(spec.stages.map((s: any) => s.plugin)).toEqual(['core:data-prep', 'seed:keras-mlp', 'seed:onnx-export', 'core:deploy', 'core:roi-ledger']);
    // The same pipeline trained on 3,000 images for 6 epochs (the full one is `npm start -- --pipeline …`);
    // the data stays whole, so export and deploy measure on the 10k MNIST test images.
    const EPOCHS = 6;
    Object.assign(spec.stages[1].params, { epochs: EPOCHS, trainLimit: 3000 });
    spec.stages[3].params.gates.minTestAccuracy = 0.8; // 3,000 images and 6 epochs reach about 0.9
    const started = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, { spec });
    expect(started.errors, JSON.stringify(started.errors)).toBeUndefined();
    const id = started.data.startPipeline.id as string;
    const q = `query($id: ID!) { run(id: $id) { status stages { id status attempts error metrics outputs { kind uri meta } epochs { attempt epoch trainLoss trainAccuracy valLoss valAccuracy } } } }`;
    const read = async () => (await stack.gql(q, { id })).data.run;

    // Kill the Python process once it has checkpointed an epoch: the callback reports epoch n, then
    // its checkpoint, so a second epoch on record means the first one's checkpoint was sent.
    await waitFor(async () => (await read()).stages[1].epochs.length >= 2, 'two Keras epochs', 300_000, 250);
    const pids = kerasProcesses();
    expect(pids.length).toBe(1);
    process.kill(pids[0]!, 'SIGKILL');

    const done = await waitFor(
      async () => {
        const r = await read();
        return r.status !== 'RUNNING' ? r : undefined;
      },
      'the run to close',
      500_000,
      1000,
    );
    expect(done.status, JSON.stringify(done.stages.map((s: any) => s.error).filter(Boolean))).toBe('COMPLETED');
    const train = done.stages[1];
    expect(train.attempts).toBe(2);
    expect(train.metrics.resumedFromEpoch).toBeGreaterThanOrEqual(1);
    expect(train.metrics.resumedFromEpoch).toBeLessThanOrEqual(EPOCHS);
    expect(train.metrics.protocol).toBe(1);
    expect(String(train.metrics.sdk)).toMatch(/^capstan-stage\//);
    // Curves: every epoch of both attempts, with Keras's numbers under the standard names.
    const second = train.epochs.filter((e: any) => e.attempt === 2);
    expect(second.map((e: any) => e.epoch)).toEqual(
      Array.from({ length: EPOCHS - train.metrics.resumedFromEpoch }, (_, i) => train.metrics.resumedFromEpoch + 1 + i),
    );
    for (const e of train.epochs) for (const k of ['trainLoss', 'trainAccuracy', 'valLoss', 'valAccuracy']) expect(e[k]).toBeTypeOf('number');
    expect(train.epochs.filter((e: any) => e.epoch === EPOCHS).at(-1).valAccuracy).toBeGreaterThan(0.8);
    const model = train.outputs.find((o: any) => o.kind === 'model');
    expect(model.meta).toMatchObject({ format: 'keras' });
    expect(existsSync(path.join(stack.artifacts.resolve(model.uri), 'model.keras'))).toBe(true);

    // Export: the float32 graph matched Keras; ONNX Runtime's uint8 is smaller and scores about the same.
    const exp = done.stages[2];
    expect(exp.status).toBe('SUCCEEDED');
    expect(exp.metrics.maxAbsDiffFloat32).toBeLessThan(1e-4);
    expect(exp.metrics.testCount).toBe(10_000);
    expect(exp.metrics.uint8Bytes).toBeLessThan(exp.metrics.float32Bytes * 0.4);
    expect(Math.abs(exp.metrics.uint8TestAccuracy - exp.metrics.kerasTestAccuracy)).toBeLessThan(0.01);
    const onnxOut = exp.outputs.find((o: any) => o.kind === 'model');
    expect(onnxOut.meta).toMatchObject({ format: 'onnx', quantization: 'uint8', uint8Bytes: exp.metrics.uint8Bytes, float32Bytes: exp.metrics.float32Bytes });

    // Deploy registered it as ONNX and promoted it; the registry's accuracy is ONNX Runtime's on the 10k test images.
    const deploy = done.stages[3];
    expect(deploy.status).toBe('SUCCEEDED');
    const reg = (await stack.gql(`{ model(name: "mnist-keras") { production { version format runtime testAccuracy artifactUri metrics } } }`)).data.model
      .production;
    expect(reg.format).toBe('ONNX');
    expect(reg.runtime).toMatch(/^onnxruntime-node /);
    expect(reg.metrics).toMatchObject({ weightFormat: 'uint8', evalSplit: 'test', evalRows: 10_000 });
    expect(reg.testAccuracy).toBeGreaterThan(0.8);

    // Independently: the deployed model.onnx from the artifact store, in onnxruntime-node, on the dataset's test split.
    const deployedDir = stack.artifacts.resolve(reg.artifactUri);
    const meta = JSON.parse(await readFile(path.join(deployedDir, 'capstan-model.json'), 'utf8'));
    expect(meta).toMatchObject({
      format: 'onnx',
      quantization: 'uint8',
      input: { shape: [null, 28, 28], encoding: { kind: 'scale' } },
      output: { kind: 'probabilities' },
    });
    expect(statSync(path.join(deployedDir, 'model.onnx')).size).toBe(exp.metrics.uint8Bytes);
    const data = done.stages[0].outputs.find((o: any) => o.kind === 'dataset');
    const test = await loadSplit(stack.artifacts.resolve(data.uri), { split: 'test' });
    expect(test.count).toBe(10_000);
    const session = await ort.InferenceSession.create(path.join(deployedDir, 'model.onnx'));
    let correct = 0;
    const rowSize = 28 * 28;
    for (let i = 0; i < test.count; i += 1000) {
      const n = Math.min(1000, test.count - i);
      const x = new ort.Tensor('float32', test.x.slice(i * rowSize, (i + n) * rowSize), [n, 28, 28]);
      const p = (await session.run({ [meta.input.name]: x }))[meta.output.name]!.data as Float32Array;
      for (let r = 0; r < n; r++) {
        const row = p.subarray(r * 10, r * 10 + 10);
        if (row.indexOf(Math.max(...row)) === test.y[i + r]) correct++;
      }
    }
    await session.release();
    const independent = correct / test.count;
    expect(Math.abs(independent - reg.testAccuracy) * 100).toBeLessThanOrEqual(0.1); // ±0.1 point
    // Python's onnxruntime (1.32) scored the same graph within a few hundredths of a point (its integer kernels differ from 1.30's).
    expect(Math.abs(independent - exp.metrics.uint8TestAccuracy) * 100).toBeLessThanOrEqual(0.3);

    // The ledger booked the Python stages' compute like any other.
    expect(done.stages[4].status).toBe('SUCCEEDED');
    const usage = await stack.db.query<{ attempt: number; cpu_ms: number | string }>(
      `SELECT attempt, cpu_ms FROM ledger_usage WHERE run_id = ? AND stage_id = 'train' ORDER BY attempt`,
      [id],
    );
    expect(usage.map((u) => u.attempt)).toEqual([1, 2]);
    for (const u of usage) expect(Number(u.cpu_ms)).toBeGreaterThan(0);
  });
});
