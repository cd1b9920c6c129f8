// Checks the native backend on this host: which backend loads, which devices TensorFlow sees,
// and the seed MLP's training speed (model.fit samples/s). For a GPU host after
// `npm run setup:native -- --gpu`:
//   npm run gpu-check                                 # best backend (node-gpu when a GPU is usable)
//   CUDA_VISIBLE_DEVICES=1 npm run gpu-check          # one chosen device, as a replica would get it
//   npm run gpu-check -- --batch 32 --samples 12800   # other sizes
// Also works on a CPU-only host (reports node or wasm). Prints one JSON line at the end.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { loadTf } from '../ml/backend.js';
import { buildMlp, compileClassifier, seedMlpSpec } from '../ml/models/mlp.js';
import { fitPass } from '../ml/training/train-loop.js';

const { values: flags } = parseArgs({
  options: {
    batch: { type: 'string', default: '256' },
    samples: { type: 'string', default: '25600' },
    passes: { type: 'string', default: '3' },
    /** Internal: the child that loads TensorFlow with its device log on. */
    devices: { type: 'boolean', default: false },
  },
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** TensorFlow names the devices it creates in its INFO log; a child process turns that log on. */
function tensorflowDevices(): string[] {
  const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, '--devices'], {
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '0' },
    timeout: 120_000,
  });
  const lines = `${r.stdout}\n${r.stderr}`.split('\n');
  const created = lines
    .filter((l) => /Created device|device:GPU|Found device|cuInit|CUDA/i.test(l))
    .map((l) => l.replace(/^[IWE]\d+ [\d:.]+\s+\d+ /, '').trim());
  return [...new Set(created)];
}

async function main(): Promise<void> {
  if (flags.devices) {
    const { tf } = await loadTf();
    tf.tidy(() => tf.matMul(tf.ones([8, 8]), tf.ones([8, 8])).dataSync()); // makes TensorFlow place an op
    return;
  }
  const batch = Number(flags.batch);
  const samples = Number(flags.samples);
  const passes = Number(flags.passes);
  if (![batch, samples, passes].every((n) => Number.isInteger(n) && n > 0)) throw new Error('--batch, --samples and --passes must be positive whole numbers');

  const nvidiaSmi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  console.log(`host: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores, Node ${process.version}`);
  console.log(`nvidia-smi -L: ${nvidiaSmi.error ? 'not found' : nvidiaSmi.stdout.trim() || nvidiaSmi.stderr.trim()}`);
  console.log(`CUDA_VISIBLE_DEVICES: ${process.env.CUDA_VISIBLE_DEVICES ?? '(unset)'}`);

  const t0 = performance.now();
  const { tf, backend, skipped } = await loadTf();
  console.log(`backend: ${backend} (tf.getBackend() = ${tf.getBackend()}, loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  for (const s of skipped) console.log(`  skipped ${s.backend}: ${s.reason}`);
  const gpuInUse = (tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice;
  if (tf.getBackend() === 'tensorflow') {
    console.log(`TensorFlow uses a GPU device: ${gpuInUse}`);
    const devices = tensorflowDevices();
    console.log(`TensorFlow's device log:${devices.length ? '' : ' (nothing about devices)'}`);
    for (const d of devices) console.log(`  ${d}`);
  }

  // The seed MLP on synthetic MNIST-shaped data: speed does not depend on the pixel values.
  const x = new Float32Array(samples * 784);
  const y = new Uint8Array(samples);
  for (let i = 0; i < x.length; i++) x[i] = Math.random();
  for (let i = 0; i < y.length; i++) y[i] = i % 10;
  const data = { x, y, featureShape: [28, 28] };
  const model = buildMlp(tf, seedMlpSpec);
  compileClassifier(tf, model, { learningRate: 1e-3 });
  await fitPass(tf, model, { x: x.subarray(0, 10 * batch * 784), y: y.subarray(0, 10 * batch), featureShape: [28, 28] }, { batchSize: batch }); // warm-up
  const runs: number[] = [];
  for (let p = 0; p < passes; p++) {
    const t = performance.now();
    await fitPass(tf, model, data, { batchSize: batch });
    runs.push(samples / ((performance.now() - t) / 1000));
  }
  const sps = median(runs);
  console.log(
    `seed MLP (784-128-10), model.fit, batch ${batch}: ${Math.round(sps)} samples/s (median of ${passes} passes of ${samples}; ${runs.map(Math.round).join(', ')})`,
  );
  console.log(
    JSON.stringify({
      backend,
      tfBackend: tf.getBackend(),
      gpuInUse: gpuInUse ?? null,
      cudaVisibleDevices: process.env.CUDA_VISIBLE_DEVICES ?? null,
      batch,
      samplesPerSec: Math.round(sps),
    }),
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
