// Training throughput of the seed MLP (784-128-10, batch 32) per tfjs backend, and with
// --full: test accuracy after 10 epochs on full MNIST and multi-device fit with 1 vs 2 replicas.
//   npx tsx bench/ml-training.ts            # samples/s per backend (wasm, cpu)
//   npx tsx bench/ml-training.ts --full     # + full MNIST runs (a few minutes)
// Each backend is measured in its own process (a process loads one backend).
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ArtifactStore } from '../lib/artifacts.js';
import { silentLogger } from '../lib/logger.js';
import { loadTf, type BackendName } from '../ml/backend.js';
import { inputsOf, readDataset } from '../ml/data/dataset.js';
import { buildMlp, compileClassifier, seedMlpSpec } from '../ml/models/mlp.js';
import { fitPass, subset } from '../ml/training/train-loop.js';
import type { StageContext, StageResult } from '../plugins/contract.js';
import { dataPrepStage } from '../plugins/core/data-prep/index.js';
import { multiDeviceFitStage } from '../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../plugins/core/pretrain/index.js';

const args = process.argv.slice(2);
const self = fileURLToPath(import.meta.url);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function context(store: ArtifactStore, stageId: string, replica?: { index: number; count: number }): StageContext {
  return {
    runId: 'bench',
    pipeline: 'bench',
    stageId,
    attempt: 1,
    ...(replica ? { replica } : {}),
    artifacts: store,
    heartbeat: () => undefined,
    lastCheckpoint: undefined,
    logger: silentLogger,
    signal: new AbortController().signal,
    services: {},
  };
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
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await fitPass(tf, model, data, { batchSize: 32 });
    runs.push(n / ((performance.now() - t0) / 1000));
  }
  process.stdout.write(JSON.stringify({ backend: got, samplesPerSec: median(runs), runs: runs.map(Math.round), samplesPerRun: n }) + '\n');
}

async function main(): Promise<void> {
  const mi = args.indexOf('--measure');
  if (mi >= 0) return measure(args[mi + 1] as BackendName, args[mi + 2]!);

  const cpus = os.cpus();
  console.log(`machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${os.platform()} ${os.arch()}, Node ${process.version}`);
  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-bench-'));
  const store = new ArtifactStore(root);
  try {
    const full = args.includes('--full');
    const prep = dataPrepStage();
    const prepRes = await prep.run(context(store, 'prep'), prep.paramsSchema.parse(full ? { seed: 1 } : { limit: 12000, seed: 1 }), {});
    const dataset = prepRes.outputs.dataset!;
    console.log(`data: ${prepRes.metrics.trainCount} train / ${prepRes.metrics.validationCount} validation / ${prepRes.metrics.testCount} test (prep ${prepRes.metrics.seconds} s)`);

    console.log('\nseed MLP 784-128-10, batch 32, model.fit, one process per backend, median of 5 passes:');
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    for (const b of ['wasm', 'cpu'] as const) {
      const r = spawnSync(process.execPath, ['--import', tsx, self, '--measure', b, store.resolve(dataset)], { encoding: 'utf8' });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      try {
        const m = JSON.parse(line) as { backend: string; samplesPerSec: number; runs: number[]; samplesPerRun: number };
        console.log(`  ${b.padEnd(5)} → backend ${m.backend}: ${Math.round(m.samplesPerSec)} samples/s (runs ${m.runs.join(', ')}; ${m.samplesPerRun} samples each)`);
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

    console.log('\ncore:multi-device-fit, 1 epoch from the pretrained model, sync every 50 steps:');
    const fit = multiDeviceFitStage();
    for (const replicas of [1, 2]) {
      const params = fit.paramsSchema.parse({ replicas, epochs: 1, syncEverySteps: 50 });
      const stageId = `fit-${replicas}`;
      const t1 = performance.now();
      const results: StageResult[] = await Promise.all(
        Array.from({ length: replicas }, (_, index) => fit.run(context(store, stageId, { index, count: replicas }), params, { model: preRes.outputs.model!, dataset })),
      );
      const wall = (performance.now() - t1) / 1000;
      const red = await fit.dataParallel!.reduce(context(store, stageId), params, { model: preRes.outputs.model!, dataset }, results);
      const per = results.map((r) => Math.round(r.metrics.samplesPerSec as number)).join(' + ');
      console.log(
        `  ${replicas} replica(s): ${Math.round(red.metrics.samplesPerSecTotal as number)} samples/s total (per replica ${per}; ${wall.toFixed(1)} s wall incl. process start), test accuracy ${red.metrics.testAccuracy}`,
      );
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
