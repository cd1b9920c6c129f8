// core:pretrain beside its Keras anchors, on the same data, in one run: the seed MLP on full MNIST
// (core:data-prep as pipelines/mnist-default.yaml writes it: 54,000 train / 6,000 validation /
// 10,000 test), 10 epochs, batch 32, validation every epoch. Each run trains core:pretrain once (its
// child process, the step loop, on the best tfjs backend here) and each Keras variant of
// bench/keras_anchors.py once (model.fit; steps_per_execution 32; XLA; both), interleaved run by
// run so the machine's load falls on all of them alike. Prints a table of medians and one JSON line
// per row.
//   npx tsx bench/keras-anchors.ts [--runs 3] [--epochs 10] [--variants fit,spe32,xla,spe32+xla] [--limit N]
// Needs TensorFlow for Python: CAPSTAN_KERAS_PYTHON, the venv of `npm run setup:python`
// (.tools/python), or python3 that imports tensorflow.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createStageContext } from '../activities/stage-context.js';
import { ArtifactStore } from '../lib/artifacts.js';
import { silentLogger } from '../lib/logger.js';
import type { StageContext } from '../plugins/contract.js';
import { dataPrepStage } from '../plugins/core/data-prep/index.js';
import { pretrainStage } from '../plugins/core/pretrain/index.js';
import type { StageServices } from '../plugins/services.js';
import { machineLine, median } from './machine.js';

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    epochs: { type: 'string', default: '10' },
    variants: { type: 'string', default: 'fit,spe32,xla,spe32+xla' },
    /** A seeded subset of this many labelled images (smoke runs); default: all of MNIST. */
    limit: { type: 'string' },
  },
});
const here = path.dirname(fileURLToPath(import.meta.url));

interface Row {
  name: string;
  samplesPerSec: number;
  trainSeconds: number;
  wallSeconds: number;
  cpuSeconds: number;
  testAccuracy: number;
}

/** A Python that imports TensorFlow. */
export function tensorflowPython(): string | undefined {
  const venv = path.resolve(here, '..', '.tools', 'python', 'bin', 'python');
  const candidates = [process.env.CAPSTAN_KERAS_PYTHON, existsSync(venv) ? venv : undefined, 'python3'].filter((c): c is string => Boolean(c));
  return candidates.find(
    (cmd) =>
      spawnSync(cmd, ['-c', 'import tensorflow'], { env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' }, stdio: 'ignore', timeout: 120_000 }).status === 0,
  );
}

function context(store: ArtifactStore, stageId: string): StageContext {
  return createStageContext({
    artifacts: store,
    services: {} as StageServices, // data-prep and pretrain use none
    logger: silentLogger,
    runId: 'bench',
    pipeline: 'bench',
    stageId,
    attempt: 1,
    lastCheckpoint: undefined,
    signal: new AbortController().signal,
    heartbeat: () => undefined,
  }).ctx;
}

async function main(): Promise<void> {
  const runs = Number(flags.runs);
  const epochs = Number(flags.epochs);
  const variants = flags.variants.split(',');
  if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(epochs) || epochs < 1)
    throw new Error(`--runs and --epochs must be positive whole numbers; got ${flags.runs} and ${flags.epochs}`);
  const python = tensorflowPython();
  if (!python) throw new Error('no Python that imports tensorflow: run npm run setup:python, or set CAPSTAN_KERAS_PYTHON');
  console.log(
    `machine: ${machineLine()}; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );

  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-anchors-'));
  const store = new ArtifactStore(root);
  try {
    const prep = dataPrepStage();
    const prepRes = await prep.run(
      context(store, 'data'),
      prep.paramsSchema.parse({ source: { format: 'mnist' }, validationFraction: 0.1, seed: 42, ...(flags.limit ? { limit: Number(flags.limit) } : {}) }),
      {},
    );
    const dataset = prepRes.outputs.dataset!;
    const datasetDir = store.resolve(dataset);
    console.log(
      `data: ${prepRes.metrics.trainCount} train / ${prepRes.metrics.validationCount} validation / ${prepRes.metrics.testCount} test; ${epochs} epochs, batch 32; ${runs} run(s), each core:pretrain and every Keras variant once`,
    );

    const rows: Row[] = [];
    const pretrainRatios = new Map<string, number[]>();
    let pretrainBackend = '';
    for (let r = 0; r < runs; r++) {
      const keras = (): Row[] => {
        const p = spawnSync(
          python,
          [
            path.join(here, 'keras_anchors.py'),
            '--runs',
            '1',
            '--first-run',
            String(r),
            '--epochs',
            String(epochs),
            '--variants',
            variants.join(','),
            '--dataset',
            datasetDir,
          ],
          {
            encoding: 'utf8',
            env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
            maxBuffer: 64 << 20,
          },
        );
        const fits = p.stdout
          .split('\n')
          .filter((l) => l.startsWith('{"kind": "fit"'))
          .map(
            (l) =>
              JSON.parse(l) as { variant: string; samplesPerSec: number; trainSeconds: number; wallSeconds: number; cpuSeconds: number; testAccuracy: number },
          );
        if (fits.length !== variants.length)
          throw new Error(`keras_anchors.py failed (exit ${p.status}): ${p.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        if (r === 0) for (const l of p.stdout.split('\n').filter((x) => x.startsWith('backend:'))) console.log(l);
        return fits.map((f) => ({
          name: `keras ${f.variant}`,
          samplesPerSec: f.samplesPerSec,
          trainSeconds: f.trainSeconds,
          wallSeconds: f.wallSeconds,
          cpuSeconds: f.cpuSeconds,
          testAccuracy: f.testAccuracy,
        }));
      };
      const pretrain = async (): Promise<Row> => {
        const pre = pretrainStage();
        const res = await pre.run(context(store, `pretrain-${r}`), pre.paramsSchema.parse({ epochs }), { dataset });
        const m = res.metrics;
        pretrainBackend = `${String(m.tfBackend)}, ${String(m.trainLoop)} loop`;
        return {
          name: 'core:pretrain',
          samplesPerSec: m.samplesPerSec as number,
          trainSeconds: m.trainSeconds as number,
          wallSeconds: m.wallSeconds as number,
          cpuSeconds: m.cpuSeconds as number,
          testAccuracy: m.testAccuracy as number,
        };
      };
      // Even runs: core:pretrain first; odd runs: last.
      const got: Row[] = r % 2 === 0 ? [await pretrain(), ...keras()] : [...keras(), await pretrain()];
      const pre = got.find((g) => g.name === 'core:pretrain')!;
      for (const g of got) {
        process.stdout.write(`${JSON.stringify({ kind: 'fit', run: r, ...g, loadAverage: Number(os.loadavg()[0]!.toFixed(2)) })}\n`);
        if (g !== pre) pretrainRatios.set(g.name, [...(pretrainRatios.get(g.name) ?? []), pre.samplesPerSec / g.samplesPerSec]);
      }
      rows.push(...got);
    }

    const names = ['core:pretrain', ...variants.map((v) => `keras ${v}`)];
    const med = (n: string, k: keyof Omit<Row, 'name'>) => median(rows.filter((x) => x.name === n).map((x) => x[k]));
    console.log(
      `\nmedians of ${runs} run(s); core:pretrain on ${pretrainBackend}; samples/s = training images × epochs / training seconds (validation excluded):`,
    );
    const head = ['row', 'samples/s', 'core:pretrain ÷ row', 'train s', 'wall s', 'CPU s', 'test acc', 'runs (samples/s)'];
    const table = names.map((n) => [
      n,
      Math.round(med(n, 'samplesPerSec')).toLocaleString('en-US'),
      pretrainRatios.has(n) ? `${median(pretrainRatios.get(n)!).toFixed(2)}×` : '—',
      med(n, 'trainSeconds').toFixed(1),
      med(n, 'wallSeconds').toFixed(1),
      med(n, 'cpuSeconds').toFixed(1),
      `${(med(n, 'testAccuracy') * 100).toFixed(2)} %`,
      rows
        .filter((x) => x.name === n)
        .map((x) => Math.round(x.samplesPerSec).toLocaleString('en-US'))
        .join(' · '),
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
    for (const cells of [head, ...table])
      console.log(`  ${cells.map((c, i) => (i === 0 || i === 7 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}`.trimEnd());
    console.log(
      '  (wall s and CPU s: core:pretrain = its whole child process (start-up, data, training, validation, test, save); Keras = the fit (training + validation) in a warm process)',
    );
    for (const n of names) {
      process.stdout.write(
        `${JSON.stringify({ kind: 'anchor', row: n, runs, epochs, samplesPerSec: med(n, 'samplesPerSec'), pretrainRatio: pretrainRatios.has(n) ? median(pretrainRatios.get(n)!) : null, trainSeconds: med(n, 'trainSeconds'), wallSeconds: med(n, 'wallSeconds'), cpuSeconds: med(n, 'cpuSeconds'), testAccuracy: med(n, 'testAccuracy'), ...(n === 'core:pretrain' ? { backend: pretrainBackend } : {}) })}\n`,
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
