// Training throughput of the seed MLP (784-128-10, batch 32) per tfjs backend, and with
// --full: test accuracy after 10 epochs on full MNIST and multi-device fit with 1 vs 2 replicas.
//   npx tsx bench/ml-training.ts            # samples/s per backend (wasm, cpu)
//   npx tsx bench/ml-training.ts --full     # + full MNIST runs (10+ minutes on 2 cores)
//   npx tsx bench/ml-training.ts --multi [--epochs 1] [--sync 50]   # only multi-device fit 1 vs 2 replicas (full MNIST, untrained seed model)
// Each backend is measured in its own process (a process loads one backend).
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createStageContext } from '../activities/stage-context.js';
import { ArtifactStore } from '../lib/artifacts.js';
import { silentLogger } from '../lib/logger.js';
import { loadTf, type BackendName } from '../ml/backend.js';
import { inputsOf, readDataset } from '../ml/data/dataset.js';
import { saveModel } from '../ml/models/io.js';
import { buildMlp, compileClassifier, seedMlpSpec } from '../ml/models/mlp.js';
import { fitPass, subset } from '../ml/training/train-loop.js';
import type { ArtifactRef, StageContext, StageResult } from '../plugins/contract.js';
import { dataPrepStage } from '../plugins/core/data-prep/index.js';
import { multiDeviceFitStage } from '../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../plugins/core/pretrain/index.js';
import type { StageServices } from '../plugins/services.js';

const { values: flags, positionals } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    multi: { type: 'boolean', default: false },
    epochs: { type: 'string', default: '1' },
    sync: { type: 'string', default: '50' },
    /** Child mode (internal): `--measure <backend> <dataset dir>`. */
    measure: { type: 'string' },
  },
  allowPositionals: true,
});
const self = fileURLToPath(import.meta.url);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function context(store: ArtifactStore, stageId: string, replica?: { index: number; count: number }): StageContext {
  return createStageContext({
    artifacts: store,
    services: {} as StageServices, // the ML stages use none
    logger: silentLogger,
    runId: 'bench',
    pipeline: 'bench',
    stageId,
    attempt: 1,
    ...(replica ? { replica } : {}),
    lastCheckpoint: undefined,
    signal: new AbortController().signal,
    heartbeat: () => undefined,
  }).ctx;
}

/** Child mode: measure one backend, print one JSON line. */
async function measure(backend: BackendName, datasetDir: string): Promise<void> {
  const { tf, backend: got } = await loadTf({ prefer: backend });
  const ds = await readDataset(datasetDir, { splits: ['train', 'validation'] });
  const n = got === 'cpu' ? 1600 : 9600;
  const rows = Array.from({ length: n }, (_, i) => i);
  const data = subset({ x: inputsOf(ds, ds.splits.train), y: ds.splits.train.y, featureShape: ds.featureShape }, rows);
  const model = buildMlp(tf, seedMlpSpec);
  compileClassifier(tf, model, { learningRate: 1e-3 });
  await fitPass(tf, model, subset(data, rows.slice(0, 640)), { batchSize: 32 }); // warm-up
  const runs: number[] = [];
  const perCpu: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    await fitPass(tf, model, data, { batchSize: 32 });
    const c = process.cpuUsage(c0);
    runs.push(n / ((performance.now() - t0) / 1000));
    perCpu.push(n / ((c.user + c.system) / 1e6));
  }
  process.stdout.write(JSON.stringify({ backend: got, samplesPerSec: median(runs), samplesPerCpuSec: median(perCpu), runs: runs.map(Math.round), samplesPerRun: n }) + '\n');
}

async function main(): Promise<void> {
  if (flags.measure) return measure(flags.measure as BackendName, positionals[0]!);

  const cpus = os.cpus();
  console.log(`machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${os.platform()} ${os.arch()}, Node ${process.version}, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-bench-'));
  const store = new ArtifactStore(root);
  try {
    const full = flags.full;
    const multiOnly = flags.multi;
    const prep = dataPrepStage();
    const prepRes = await prep.run(context(store, 'prep'), prep.paramsSchema.parse(full || multiOnly ? { seed: 1 } : { limit: 12000, seed: 1 }), {});
    const dataset = prepRes.outputs.dataset!;
    console.log(`data: ${prepRes.metrics.trainCount} train / ${prepRes.metrics.validationCount} validation / ${prepRes.metrics.testCount} test (prep ${prepRes.metrics.seconds} s)`);

    if (multiOnly) {
      const { tf } = await loadTf();
      const dir = store.dirFor('bench', 'seed-model', 'model');
      await saveModel(buildMlp(tf, seedMlpSpec), dir);
      await multiDevice(store, await store.seal('model', dir), dataset);
      return;
    }
    console.log('\nseed MLP 784-128-10, batch 32, model.fit, one process per backend, median of 5 passes:');
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    for (const b of ['wasm', 'cpu'] as const) {
      const r = spawnSync(process.execPath, ['--import', tsx, self, '--measure', b, store.resolve(dataset)], { encoding: 'utf8' });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      try {
        const m = JSON.parse(line) as { backend: string; samplesPerSec: number; samplesPerCpuSec: number; runs: number[]; samplesPerRun: number };
        console.log(
          `  ${b.padEnd(5)} → backend ${m.backend}: ${Math.round(m.samplesPerSec)} samples/s wall, ${Math.round(m.samplesPerCpuSec)} samples per CPU-second (runs ${m.runs.join(', ')}; ${m.samplesPerRun} samples each)`,
        );
      } catch {
        console.log(`  ${b}: failed: ${r.stderr.split('\n').slice(-5).join(' ')}`);
      }
    }
    if (!full) return;

    console.log('\nfull MNIST, core:pretrain, 10 epochs (child process):');
    const pre = pretrainStage();
    const t0 = performance.now();
    const preRes = await pre.run(context(store, 'pretrain'), pre.paramsSchema.parse({ epochs: 10 }), { dataset });
    const pm = preRes.metrics;
    console.log(`  backend ${pm.tfBackend}: test accuracy ${pm.testAccuracy}, val accuracy ${pm.valAccuracy}, ${Math.round(pm.samplesPerSec as number)} samples/s, ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${pm.cpuSeconds} CPU s`);

    await multiDevice(store, preRes.outputs.model!, dataset);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function multiDevice(store: ArtifactStore, model: ArtifactRef, dataset: ArtifactRef): Promise<void> {
  const epochs = Number(flags.epochs);
  const sync = Number(flags.sync);
  if (!Number.isInteger(epochs) || epochs < 1 || !Number.isInteger(sync) || sync < 1) throw new Error(`--epochs and --sync must be positive whole numbers; got ${flags.epochs} and ${flags.sync}`);
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
