// Training throughput of the seed MLP (784-128-10) and of pipelines/mnist-cnn.yaml's conv net per tfjs
// backend, training loop (model.fit, the step loop) and batch size, beside Keras, and with
// --full: test accuracy after 10 epochs on full MNIST and multi-device fit with 1 vs 2 replicas.
//   npx tsx bench/ml-training.ts            # samples/s: model × backend × loop × batch, ratio to Keras, test accuracy
//                                           # (wasm, cpu, node when `npm run setup:native` built it, node-gpu
//                                           # on a GPU host; Keras when TensorFlow for Python is importable)
//   npx tsx bench/ml-training.ts --batches 32,256 --runs 5 --models mlp,cnn --loops fit,step
//   npx tsx bench/ml-training.ts --full     # + full MNIST runs (10+ minutes on 2 cores)
//   npx tsx bench/ml-training.ts --multi [--epochs 1] [--sync 50]   # only multi-device fit 1 vs 2 replicas (full MNIST, untrained seed model)
// Each backend is measured in its own process (a process loads one backend).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { ArtifactStore } from '../lib/artifacts.js';
import { loadTf, nativeBinding, type BackendName } from '../ml/backend.js';
import { inputsOf, readDataset } from '../ml/data/dataset.js';
import { saveModel } from '../ml/models/io.js';
import { buildFromLayers, type LayerSpec } from '../ml/models/layers.js';
import { buildMlp, compileClassifier, seedMlpSpec } from '../ml/models/mlp.js';
import { ensureConvFilterGrad } from '../ml/training/step-kernels.js';
import { createStepLoop } from '../ml/training/step-loop.js';
import { evaluate, fitPass, subset } from '../ml/training/train-loop.js';
import type { ArtifactRef, StageContext, StageResult } from '../plugins/contract.js';
import { median } from './machine.js';
import { benchStageContext } from './stage-context.js';
import { dataPrepStage } from '../plugins/core/data-prep/index.js';
import { multiDeviceFitStage } from '../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../plugins/core/pretrain/index.js';

const { values: flags, positionals } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    multi: { type: 'boolean', default: false },
    epochs: { type: 'string', default: '1' },
    sync: { type: 'string', default: '50' },
    batches: { type: 'string', default: '32,256' },
    /** Models: the seed MLP and the conv net of pipelines/mnist-cnn.yaml. */
    models: { type: 'string', default: 'mlp,cnn' },
    /** Training loops: model.fit and the step loop (ml/training/step-loop.ts). */
    loops: { type: 'string', default: 'fit,step' },
    /** Child mode: which model. */
    model: { type: 'string', default: 'mlp' },
    /** Timed passes per row (the median is reported). */
    runs: { type: 'string', default: '5' },
    /** Child mode (internal): `--measure <backend> --batch N <dataset dir>`. */
    measure: { type: 'string' },
    batch: { type: 'string', default: '32' },
    /** Child mode: which training loop (`fit` = model.fit, `step` = ml/training/step-loop.ts). */
    loop: { type: 'string', default: 'fit' },
  },
  allowPositionals: true,
});
const self = fileURLToPath(import.meta.url);

const context = (store: ArtifactStore, stageId: string, replica?: { index: number; count: number }): StageContext =>
  benchStageContext(store, 'bench', stageId, replica);

interface Row {
  backend: string;
  model?: BenchModel;
  batch: number;
  loop: string;
  samplesPerSec: number;
  samplesPerCpuSec?: number;
  runs: number[];
  samplesPerRun: number;
  testAccuracy: number;
  version?: string;
}

type BenchModel = 'mlp' | 'cnn';

/** Training images per timed pass: fewer for the conv net (and the pure-JS cpu backend). */
function samplesFor(model: BenchModel, backend: BackendName | 'keras'): number {
  if (model === 'cnn') return 3200;
  return backend === 'cpu' ? 1600 : 9600;
}

/** The conv net of pipelines/mnist-cnn.yaml, read from the pipeline so the two cannot drift. */
async function cnnLayers(): Promise<LayerSpec[]> {
  const spec = parseYaml(await readFile(path.resolve(path.dirname(self), '..', 'pipelines', 'mnist-cnn.yaml'), 'utf8')) as {
    stages: { plugin: string; params: unknown }[];
  };
  const pre = spec.stages.find((st) => st.plugin === 'core:pretrain');
  const layers = pre && pretrainStage().paramsSchema.parse(pre.params).model.layers;
  if (!layers) throw new Error('pipelines/mnist-cnn.yaml has no core:pretrain stage with model.layers');
  return layers;
}

/**
 * Child mode: one backend, model, loop and batch size. A 640-sample warm-up, then `runs` timed
 * passes over the same rows (one epoch each, no shuffle), then test accuracy. One JSON line.
 * Keras (bench/keras_mnist.py --throughput) follows the same schedule.
 */
async function measure(backend: BackendName, datasetDir: string): Promise<void> {
  const { tf, backend: got } = await loadTf({ prefer: backend });
  ensureConvFilterGrad(tf); // wasm has no conv filter gradient of its own; model.fit needs it too
  const batch = Number(flags.batch);
  const passes = Number(flags.runs);
  const which = flags.model as BenchModel;
  const ds = await readDataset(datasetDir, { splits: ['train', 'test'] });
  const n = samplesFor(which, got);
  const rows = Array.from({ length: n }, (_, i) => i);
  const data = subset({ x: inputsOf(ds, ds.splits.train), y: ds.splits.train.y, featureShape: ds.featureShape }, rows);
  const model =
    which === 'cnn' ? buildFromLayers(tf, { inputShape: ds.featureShape, numClasses: 10, seed: 42, layers: await cnnLayers() }) : buildMlp(tf, seedMlpSpec);
  compileClassifier(tf, model, { learningRate: 1e-3 });
  const step = flags.loop === 'step' ? await createStepLoop(tf, model) : undefined;
  if (step && 'unsupported' in step) throw new Error(`step loop: ${step.unsupported}`);
  const pass = (d: typeof data) => (step ? step.trainPass(d, { batchSize: batch, seed: 1 }) : fitPass(tf, model, d, { batchSize: batch }));
  await pass(subset(data, rows.slice(0, 640))); // warm-up
  const runs: number[] = [];
  const perCpu: number[] = [];
  for (let i = 0; i < passes; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    await pass(data);
    const c = process.cpuUsage(c0);
    runs.push(n / ((performance.now() - t0) / 1000));
    perCpu.push(n / ((c.user + c.system) / 1e6));
  }
  await step?.commit();
  const testSplit = ds.splits.test;
  if (!testSplit) throw new Error(`${datasetDir} has no test split`);
  const test = evaluate(tf, model, { x: inputsOf(ds, testSplit), y: testSplit.y, featureShape: ds.featureShape });
  const row: Row = {
    backend: got,
    model: which,
    batch,
    loop: step ? 'step loop' : 'model.fit',
    samplesPerSec: median(runs),
    samplesPerCpuSec: median(perCpu),
    runs: runs.map(Math.round),
    samplesPerRun: n,
    testAccuracy: test.accuracy,
  };
  process.stdout.write(`${JSON.stringify(row)}\n`);
}

/** A Python that imports TensorFlow: CAPSTAN_KERAS_PYTHON, python3, or python3 over .tools/keras (pip --target). */
function kerasPython(): { cmd: string; env: NodeJS.ProcessEnv } | undefined {
  const keras = path.resolve(path.dirname(self), '..', '.tools', 'keras');
  const candidates: { cmd: string; env: NodeJS.ProcessEnv }[] = [];
  if (process.env.CAPSTAN_KERAS_PYTHON) candidates.push({ cmd: process.env.CAPSTAN_KERAS_PYTHON, env: process.env });
  candidates.push({ cmd: 'python3', env: process.env });
  if (existsSync(keras))
    candidates.push({ cmd: 'python3', env: { ...process.env, PYTHONPATH: [keras, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter) } });
  return candidates.find(
    (c) => spawnSync(c.cmd, ['-c', 'import tensorflow'], { env: { ...c.env, TF_CPP_MIN_LOG_LEVEL: '3' }, stdio: 'ignore', timeout: 120_000 }).status === 0,
  );
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Every backend × loop × batch row, Keras first, one table per model. */
async function throughputTable(datasetDir: string): Promise<void> {
  const batches = flags.batches.split(',').map(Number);
  const passes = Number(flags.runs);
  const models = flags.models.split(',') as BenchModel[];
  const loops = flags.loops.split(',');
  if (!batches.every((b) => Number.isInteger(b) && b > 0) || !Number.isInteger(passes) || passes < 1)
    throw new Error(`--batches must be positive whole numbers and --runs a positive whole number; got ${flags.batches} and ${flags.runs}`);
  if (!models.every((m) => m === 'mlp' || m === 'cnn') || !loops.every((l) => l === 'fit' || l === 'step'))
    throw new Error(`--models takes mlp,cnn and --loops fit,step; got ${flags.models} and ${flags.loops}`);
  const py = kerasPython();
  const backends: BackendName[] = ['wasm', 'cpu'];
  const missing: string[] = [];
  for (const b of ['node-gpu', 'node'] as const) {
    const nb = nativeBinding(b);
    if ('path' in nb) backends.unshift(b);
    else missing.push(`${b}: ${nb.missing}`);
  }
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

  for (const model of models) {
    const n = samplesFor(model, 'wasm');
    console.log(
      model === 'mlp'
        ? `\nseed MLP 784-128-10, Adam 1e-3, one process per row; median of ${passes} passes (9,600 images; cpu 1,600) after a 640-image warm-up; test accuracy on the 10k test images after those passes:`
        : `\nconv net of pipelines/mnist-cnn.yaml (conv 16 3×3 → pool → conv 32 3×3 → pool → dense 64 → 10; 56,714 parameters), Adam 1e-3; median of ${passes} passes of ${n.toLocaleString('en-US')} images after a 640-image warm-up (cpu not run: too slow); test accuracy on the 10k test images:`,
    );
    const rows: Row[] = [];
    const notes = [...missing];
    if (py) {
      const script = path.resolve(path.dirname(self), 'keras_mnist.py');
      const r = spawnSync(
        py.cmd,
        [script, '--throughput', '--model', model, '--batches', batches.join(','), '--samples', String(n), '--passes', String(passes)],
        { encoding: 'utf8', env: { ...py.env, TF_CPP_MIN_LOG_LEVEL: '2' } },
      );
      const got = r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Row);
      if (got.length) rows.push(...got);
      else notes.push(`keras: failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
    } else
      notes.push('keras: TensorFlow for Python is not importable (python3 -m pip install --target .tools/keras tensorflow==2.21.0 gives it to this benchmark)');

    for (const b of backends) {
      if (model === 'cnn' && b === 'cpu') continue;
      let unavailable = false;
      for (const loop of loops) {
        for (const batch of batches) {
          if (unavailable) break;
          const r = spawnSync(
            process.execPath,
            ['--import', tsx, self, '--measure', b, '--model', model, '--loop', loop, '--batch', String(batch), '--runs', String(passes), datasetDir],
            { encoding: 'utf8', env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' } },
          );
          const line = r.stdout.trim().split('\n').pop() ?? '';
          try {
            const row = JSON.parse(line) as Row;
            if (row.backend !== b) {
              notes.push(`${b}: not available here (loaded ${row.backend} instead)`);
              unavailable = true;
              break;
            }
            rows.push(row);
          } catch {
            notes.push(`${b} ${loop} batch ${batch}: failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
          }
        }
      }
    }
    printRows(rows, notes);
  }
  console.log('  (samples/CPU-s: the tfjs process only; "step loop" is ml/training/step-loop.ts, what core:pretrain and core:multi-device-fit train with)');
}

function printRows(rows: Row[], notes: string[]): void {
  const keras = new Map(rows.filter((r) => r.backend === 'keras').map((r) => [r.batch, r.samplesPerSec]));
  const head = ['backend', 'batch', 'loop', 'samples/s', 'vs Keras', 'samples/CPU-s', 'test acc', 'passes (samples/s)'];
  const table = rows
    .sort((a, b) => a.batch - b.batch)
    .map((r) => [
      r.backend === 'keras' ? `keras ${r.version ?? ''}`.trim() : r.backend,
      String(r.batch),
      r.loop,
      fmt(r.samplesPerSec),
      keras.has(r.batch) ? `${(r.samplesPerSec / keras.get(r.batch)!).toFixed(2)}×` : '—',
      r.samplesPerCpuSec ? fmt(r.samplesPerCpuSec) : '—',
      `${(r.testAccuracy * 100).toFixed(2)} %`,
      r.runs.join(', '),
    ]);
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
  const print = (cells: string[]) =>
    console.log(`  ${cells.map((c, i) => (i === 0 || i === 2 || i === 7 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}`.trimEnd());
  print(head);
  for (const t of table) print(t);
  for (const n of notes) console.log(`  note: ${n}`);
}

async function main(): Promise<void> {
  if (flags.measure) return measure(flags.measure as BackendName, positionals[0]!);

  const cpus = os.cpus();
  console.log(
    `machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${os.platform()} ${os.arch()}, Node ${process.version}, load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-bench-'));
  const store = new ArtifactStore(root);
  try {
    const full = flags.full;
    const multiOnly = flags.multi;
    const prep = dataPrepStage();
    const prepRes = await prep.run(context(store, 'prep'), prep.paramsSchema.parse(full || multiOnly ? { seed: 1 } : { limit: 12000, seed: 1 }), {});
    const dataset = prepRes.outputs.dataset!;
    console.log(
      `data: ${prepRes.metrics.trainCount} train / ${prepRes.metrics.validationCount} validation / ${prepRes.metrics.testCount} test (prep ${prepRes.metrics.seconds} s)`,
    );

    if (multiOnly) {
      const { tf } = await loadTf();
      const dir = store.dirFor('bench', 'seed-model', 'model');
      await saveModel(buildMlp(tf, seedMlpSpec), dir);
      await multiDevice(store, await store.seal('model', dir), dataset);
      return;
    }
    await throughputTable(store.resolve(dataset));
    if (!full) return;

    console.log('\nfull MNIST, core:pretrain, 10 epochs (child process):');
    const pre = pretrainStage();
    const t0 = performance.now();
    const preRes = await pre.run(context(store, 'pretrain'), pre.paramsSchema.parse({ epochs: 10 }), { dataset });
    const pm = preRes.metrics;
    console.log(
      `  backend ${pm.tfBackend}: test accuracy ${pm.testAccuracy}, val accuracy ${pm.valAccuracy}, ${Math.round(pm.samplesPerSec as number)} samples/s, ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${pm.cpuSeconds} CPU s`,
    );

    await multiDevice(store, preRes.outputs.model!, dataset);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function multiDevice(store: ArtifactStore, model: ArtifactRef, dataset: ArtifactRef): Promise<void> {
  const epochs = Number(flags.epochs);
  const sync = Number(flags.sync);
  if (!Number.isInteger(epochs) || epochs < 1 || !Number.isInteger(sync) || sync < 1)
    throw new Error(`--epochs and --sync must be positive whole numbers; got ${flags.epochs} and ${flags.sync}`);
  console.log(`\ncore:multi-device-fit, ${epochs} epoch(s), sync every ${sync} steps (load average before: ${os.loadavg()[0]!.toFixed(2)}):`);
  const fit = multiDeviceFitStage();
  for (const replicas of [1, 2]) {
    const params = fit.paramsSchema.parse({ replicas, epochs, syncEverySteps: sync });
    const stageId = `fit-${replicas}`;
    const t1 = performance.now();
    const results: StageResult[] = await Promise.all(
      Array.from({ length: replicas }, (_, index) => fit.run(context(store, stageId, { index, count: replicas }), params, { model, dataset })),
    );
    const wall = (performance.now() - t1) / 1000;
    const red = await fit.dataParallel!.reduce(context(store, stageId), params, { model, dataset }, results);
    const per = results.map((r) => Math.round(r.metrics.samplesPerSec as number)).join(' + ');
    const cpu = results.reduce((n, r) => n + (r.metrics.cpuSeconds as number), 0);
    console.log(
      `  ${replicas} replica(s): ${Math.round(red.metrics.samplesPerSecTotal as number)} samples/s total (compute per replica ${per}; ${wall.toFixed(1)} s wall incl. process start; ${cpu.toFixed(1)} CPU-s in replicas, incl. start-up), test accuracy ${red.metrics.testAccuracy}`,
    );
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
