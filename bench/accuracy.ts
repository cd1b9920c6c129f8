// Does the default pipeline keep its accuracy? pipelines/mnist-default.yaml's ML stages, with the
// pipeline's own params, run in this process one seed after another (the stage plugins themselves,
// each training in its child processes as under a worker, without Temporal around them):
//   data prep → pretrain → prune (+ fine-tune) → 2-replica fit → the deployed uint8 model's test accuracy
// and, per seed and as medians, the test accuracy after each stage and the gap to pretrain's.
//   npx tsx bench/accuracy.ts                          # native when built (npm run setup:native), 3 seeds
//   npx tsx bench/accuracy.ts --backend wasm --seeds 1,2,3
//   npx tsx bench/accuracy.ts --variant 'oneshot-1:{"prune":{"schedule":"oneshot","fineTuneEpochs":1}}'
//       # variants of the prune and fit params (over the pipeline's), each from the same pretrained model per seed;
//       # --variant pipeline is the pipeline as it is (the default when no variant is given)
// The data split keeps the pipeline's seed (the same test set for every run); the seed varies the
// pretrain initialisation and shuffles, the fine-tune's shuffles and the replicas' shards.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { ArtifactStore } from '../lib/artifacts.js';
import { loadTf, type BackendName } from '../ml/backend.js';
import { exportModel } from '../ml/compression/export-model.js';
import { accuracy, loadSplit } from '../ml/evaluation/evaluate.js';
import { folderLoadHandler } from '../ml/models/io.js';
import type { StageContext, StageResult } from '../plugins/contract.js';
import { dataPrepStage } from '../plugins/core/data-prep/index.js';
import { multiDeviceFitStage } from '../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../plugins/core/pretrain/index.js';
import { pruneQuantizeStage } from '../plugins/core/prune-quantize/index.js';
import { machineLine, median } from './machine.js';
import { benchStageContext } from './stage-context.js';

const { values: flags } = parseArgs({
  options: {
    seeds: { type: 'string', default: '1,2,3' },
    backend: { type: 'string', default: 'node' },
    pipeline: { type: 'string', default: 'mnist-default' },
    /** `name:{"prune":{…},"fit":{…}}` — params over the pipeline's; repeatable. */
    variant: { type: 'string', multiple: true },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface StageSpec {
  id: string;
  plugin: string;
  params?: Record<string, unknown>;
}

const context = (store: ArtifactStore, stageId: string, replica?: { index: number; count: number }): StageContext =>
  benchStageContext(store, 'bench-accuracy', stageId, replica);

interface SeedResult {
  variant: string;
  seed: number;
  pretrain: number;
  pruned: number;
  fit: number;
  deployed: number;
  sparsity: number;
  seconds: { pretrain: number; prune: number; fit: number };
  loops: string;
}

interface Variant {
  name: string;
  prune: Record<string, unknown>;
  fit: Record<string, unknown>;
}

function parseVariant(v: string): Variant {
  const i = v.indexOf(':');
  if (i < 0) return { name: v, prune: {}, fit: {} };
  const o = JSON.parse(v.slice(i + 1)) as { prune?: Record<string, unknown>; fit?: Record<string, unknown> };
  return { name: v.slice(0, i), prune: o.prune ?? {}, fit: o.fit ?? {} };
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, (performance.now() - t0) / 1000];
}

async function main(): Promise<void> {
  const backend = flags.backend as BackendName;
  const { tf, backend: got } = await loadTf({ prefer: backend });
  if (got !== backend) throw new Error(`asked for the ${backend} backend, got ${got} (native: npm run setup:native)`);
  const spec = parseYaml(await readFile(path.join(root, 'pipelines', `${flags.pipeline}.yaml`), 'utf8')) as { stages: StageSpec[] };
  const params = (plugin: string) => ({ ...(spec.stages.find((s) => s.plugin === plugin)?.params ?? {}) });
  const variants = (flags.variant?.length ? flags.variant : ['pipeline']).map(parseVariant);
  const seeds = flags.seeds.split(',').map(Number);
  console.log(
    `machine: ${machineLine()}, load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `pipeline ${flags.pipeline}, backend ${got}, seeds ${seeds.join(', ')}; prune ${JSON.stringify(params('core:prune-quantize'))}, fit ${JSON.stringify(params('core:multi-device-fit'))}`,
  );
  for (const v of variants) console.log(`variant ${v.name}: prune ${JSON.stringify(v.prune)}, fit ${JSON.stringify(v.fit)}`);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'capstan-bench-accuracy-'));
  const store = new ArtifactStore(dir);
  const results: SeedResult[] = [];
  try {
    const prep = dataPrepStage();
    const prepRes = await prep.run(context(store, 'data'), prep.paramsSchema.parse(params('core:data-prep')), {});
    const dataset = prepRes.outputs.dataset!;
    const test = await loadSplit(store.resolve(dataset), { split: 'test' });
    console.log(`data: ${prepRes.metrics.trainCount} train / ${prepRes.metrics.validationCount} validation / ${test.count} test\n`);

    for (const seed of seeds) {
      const pre = pretrainStage({ tfBackend: backend });
      const [preRes, preS] = await timed(() =>
        pre.run(context(store, `pretrain-${seed}`), pre.paramsSchema.parse({ ...params('core:pretrain'), seed }), { dataset }),
      );
      for (const v of variants) {
        const id = `${v.name}-${seed}`;
        const prune = pruneQuantizeStage({ tfBackend: backend });
        const [pruneRes, pruneS] = await timed(() =>
          prune.run(context(store, `prune-${id}`), prune.paramsSchema.parse({ ...params('core:prune-quantize'), ...v.prune, seed }), {
            model: preRes.outputs.model!,
            dataset,
          }),
        );
        const fit = multiDeviceFitStage({ tfBackend: backend });
        const fitParams = fit.paramsSchema.parse({ ...params('core:multi-device-fit'), ...v.fit, seed });
        const fitId = `fit-${id}`;
        const inputs = { model: pruneRes.outputs.model!, dataset };
        const [fitRes, fitS] = await timed(async () => {
          const replicas: StageResult[] = await Promise.all(
            Array.from({ length: fitParams.replicas }, (_, index) => fit.run(context(store, fitId, { index, count: fitParams.replicas }), fitParams, inputs)),
          );
          return { red: await fit.dataParallel!.reduce(context(store, fitId), fitParams, inputs, replicas), replicas };
        });
        // What core:deploy serves: the fit's float32 weights quantized to uint8 at export.
        const deployed = path.join(dir, `deployed-${id}`);
        await exportModel(tf, { sourceDir: store.resolve(fitRes.red.outputs.model!), destDir: deployed, quantize: 'uint8' });
        const model = await tf.loadLayersModel(folderLoadHandler(tf, deployed));
        const deployedAcc = await accuracy(tf, model, test);
        model.dispose();
        const r: SeedResult = {
          variant: v.name,
          seed,
          pretrain: preRes.metrics.testAccuracy as number,
          pruned: pruneRes.metrics.testAccuracyAfter as number,
          fit: fitRes.red.metrics.testAccuracy as number,
          deployed: deployedAcc,
          sparsity: pruneRes.metrics.sparsity as number,
          seconds: { pretrain: preS, prune: pruneS, fit: fitS },
          loops: `pretrain ${preRes.metrics.trainLoop}, fine-tune ${pruneRes.metrics.fineTuneLoop ?? '—'} (${pruneRes.metrics.pruningSchedule}), fit ${fitRes.replicas[0]?.metrics.trainLoop}${fitRes.replicas[0]?.metrics.averagedOptimizerState ? ' + Adam moments averaged' : ''}`,
        };
        results.push(r);
        console.log(
          `[${v.name}] seed ${seed}: pretrain ${pct(r.pretrain)} → pruned ${pct(r.pruned)} (sparsity ${pct(r.sparsity)}) → fit ${pct(r.fit)} → deployed uint8 ${pct(r.deployed)}; gap ${gap(r)}; ` +
            `${r.seconds.pretrain.toFixed(0)} + ${r.seconds.prune.toFixed(0)} + ${r.seconds.fit.toFixed(0)} s; ${r.loops}`,
        );
      }
    }
    for (const v of variants) {
      const rs = results.filter((r) => r.variant === v.name);
      const med = (k: 'pretrain' | 'pruned' | 'fit' | 'deployed') => median(rs.map((r) => r[k]));
      const gaps = rs.map((r) => (r.pretrain - r.deployed) * 100);
      console.log(
        `\n[${v.name}] median of ${rs.length}: pretrain ${pct(med('pretrain'))} → pruned ${pct(med('pruned'))} → fit ${pct(med('fit'))} → deployed uint8 ${pct(med('deployed'))}`,
      );
      console.log(
        `[${v.name}] gap pretrain − deployed per seed: ${gaps.map((g) => g.toFixed(2)).join(', ')} points; median ${median(gaps).toFixed(2)} points (target ≤ 0.20: ${median(gaps) <= 0.2 ? 'met' : 'NOT met'})`,
      );
      console.log(
        `[${v.name}] seconds (median): pretrain ${median(rs.map((r) => r.seconds.pretrain)).toFixed(0)}, prune + fine-tune ${median(rs.map((r) => r.seconds.prune)).toFixed(0)}, fit ${median(rs.map((r) => r.seconds.fit)).toFixed(0)}`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)} %`;
}

function gap(r: SeedResult): string {
  const g = (r.pretrain - r.deployed) * 100;
  return `${g >= 0 ? '−' : '+'}${Math.abs(g).toFixed(2)} points`;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
