// What running a Python script as a Capstan stage costs: the seed's Keras script
// (stages/keras-seed/train.py) run bare — `python train.py --dataset DIR` in the SDK's local mode —
// against the same script as the `seed:keras-mlp` stage through the worker's stage code
// (stages/keras-seed/capstan-stage.yaml loaded as the worker loads it, run with a stage context as
// the dispatch activity builds one: launcher, context file, message pipe, CPU sampling, output
// sealing), on the same dataset, same params, alternating bare / stage run by run.
//   npx tsx bench/python-stage.ts [--runs 5] [--epochs 10] [--limit 12000] [--devices 2]
//   npx tsx bench/python-stage.ts --dataset-only DIR [--limit N]   # only write a core:data-prep dataset folder (for hand runs of train.py)
// Reported per side (medians): wall seconds; start-up = launch → the first message (train.py sends
// a heartbeat right after it opens the stage, before it imports TensorFlow); wall after start-up;
// CPU seconds (bare: the children's times from the shell that starts it; stage: what the stage books
// = the command's tree as the launcher measured it, plus the launcher's own); training seconds and samples/s as train.py reports them.
// Overhead % = (stage wall after start-up − bare wall after start-up) / bare wall after start-up,
// median of the per-pair figures; on a shared machine training speed itself swings between runs, so
// also: the stage's own time = median "not training" seconds (after start-up, minus the training
// seconds train.py measured) of the stage minus the bare run's, as a share of the bare run's wall
// after start-up, and the part of it outside the process (stage wall − the process's wall). Temporal's own dispatch of the activity is not in these figures
// (`npm run bench:orchestration` measures it: ~50 ms per stage).
// Needs a Python with TensorFlow and capstan_stage: CAPSTAN_PYTHON, .tools/python (npm run setup:python), or python3.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createStageContext } from '../activities/stage-context.js';
import { ArtifactStore } from '../lib/artifacts.js';
import { readLines } from '../lib/read-lines.js';
import { silentLogger } from '../lib/logger.js';
import type { ArtifactRef } from '../plugins/contract.js';
import { loadStageManifest } from '../plugins/command/manifest.js';
import { dataPrepStage } from '../plugins/core/data-prep/index.js';
import type { StageServices } from '../plugins/services.js';
import { machineLine, median, quantile } from './machine.js';

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    epochs: { type: 'string', default: '10' },
    /** Labelled MNIST images kept by core:data-prep (90 % train, 10 % validation); 0 = all 60,000. */
    limit: { type: 'string', default: '12000' },
    devices: { type: 'string', default: '2' },
    'dataset-only': { type: 'string' },
  },
});
const here = path.dirname(fileURLToPath(import.meta.url));
const stageDir = path.resolve(here, '..', 'stages', 'keras-seed');

/** A Python that imports TensorFlow and the SDK. */
function stagePython(): string | undefined {
  const venv = path.resolve(here, '..', '.tools', 'python', 'bin', 'python');
  const candidates = [process.env.CAPSTAN_PYTHON, existsSync(venv) ? venv : undefined, 'python3'].filter((c): c is string => Boolean(c));
  return candidates.find(
    (cmd) =>
      spawnSync(cmd, ['-c', 'import tensorflow, capstan_stage'], { env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' }, stdio: 'ignore', timeout: 120_000 })
        .status === 0,
  );
}

function stageContext(store: ArtifactStore, stageId: string, python: string, heartbeat: () => void = () => undefined): ReturnType<typeof createStageContext> {
  return createStageContext({
    artifacts: store,
    services: { python } as StageServices, // a command stage uses only `python`
    logger: silentLogger,
    runId: 'bench',
    pipeline: 'bench',
    stageId,
    attempt: 1,
    lastCheckpoint: undefined,
    signal: new AbortController().signal,
    heartbeat,
  });
}

async function prepare(store: ArtifactStore, limit: number): Promise<{ ref: ArtifactRef; counts: string }> {
  const prep = dataPrepStage();
  const res = await prep.run(
    stageContext(store, 'data', 'python3').ctx,
    prep.paramsSchema.parse({ source: { format: 'mnist' }, validationFraction: 0.1, seed: 42, ...(limit > 0 ? { limit } : {}) }),
    {},
  );
  return { ref: res.outputs.dataset!, counts: `${res.metrics.trainCount} train / ${res.metrics.validationCount} validation / ${res.metrics.testCount} test` };
}

interface Side {
  wall: number;
  firstMessage: number;
  cpu: number;
  trainSeconds: number;
  samplesPerSec: number;
  testAccuracy: number;
  /** Stage only: the process's wall time as the launcher's runner measured it (launcher start → group gone). */
  processWall?: number;
  /** Stage only: the launcher's own CPU seconds (its /proc sampling), booked with the stage. */
  launcherCpu?: number;
}

/** Seconds after start-up not spent in training steps: TensorFlow's import, data, set-up, validation, test, save (and, for the stage, sealing). */
const notTraining = (x: Side) => x.wall - x.firstMessage - x.trainSeconds;

/** `python train.py` in the SDK's local mode, with the manifest's environment, in a fresh folder; CPU from the shell's `times`. */
async function runBare(python: string, datasetDir: string, env: Record<string, string>, p: { epochs: number; devices: number }): Promise<Side> {
  const cwd = await mkdtemp(path.join(os.tmpdir(), 'capstan-bare-'));
  try {
    const argv = [path.join(stageDir, 'train.py'), '--dataset', datasetDir, '--epochs', String(p.epochs), '--devices', String(p.devices)];
    const t0 = performance.now();
    const child = spawn('sh', ['-c', '"$@"; s=$?; times >&3; exit $s', 'sh', python, ...argv], { cwd, env, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let firstMessage = NaN;
    const metrics: Record<string, number> = {};
    let times = '';
    const stderrTail: string[] = [];
    void readLines(child.stdio[2] as Readable, (line) => {
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
      if (!line.startsWith('[capstan] ')) return;
      if (Number.isNaN(firstMessage)) firstMessage = (performance.now() - t0) / 1000;
      if (line.startsWith('[capstan] metrics ')) for (const m of line.matchAll(/(\w+)=([-\d.e+]+)(?=\s|$)/g)) metrics[m[1]!] = Number(m[2]);
    });
    (child.stdio[3] as Readable).on('data', (d: Buffer) => (times += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const wall = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(`bare train.py exited ${code}: ${stderrTail.join('\n')}`);
    // `times`: the shell's own user/system, then its children's: "0m12.345s 0m1.234s".
    const child2 = times.trim().split('\n')[1] ?? '';
    const cpu = [...child2.matchAll(/(\d+)m([\d.]+)s/g)].reduce((s, m) => s + Number(m[1]) * 60 + Number(m[2]), 0);
    return { wall, firstMessage, cpu, trainSeconds: metrics.trainSeconds!, samplesPerSec: metrics.samplesPerSec!, testAccuracy: metrics.testAccuracy! };
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}

/** The seed:keras-mlp stage through the worker's stage code (manifest → command stage → launcher). */
async function runStage(store: ArtifactStore, python: string, dataset: ArtifactRef, stageId: string, p: { epochs: number; devices: number }): Promise<Side> {
  const plugin = await loadStageManifest(path.join(stageDir, 'capstan-stage.yaml'));
  const params = plugin.paramsSchema.parse({ epochs: p.epochs, devices: p.devices });
  let firstMessage = NaN;
  const t0 = performance.now();
  const { ctx, reported } = stageContext(store, stageId, python, () => {
    if (Number.isNaN(firstMessage)) firstMessage = (performance.now() - t0) / 1000;
  });
  const res = await plugin.run(ctx, params, { dataset } as never);
  const wall = (performance.now() - t0) / 1000;
  const m = res.metrics;
  const cpu = reported().cpuSeconds;
  return {
    wall,
    firstMessage,
    cpu,
    trainSeconds: m.trainSeconds as number,
    samplesPerSec: m.samplesPerSec as number,
    testAccuracy: m.testAccuracy as number,
    processWall: m.processWallSeconds as number,
    launcherCpu: cpu - (m.processCpuSeconds as number),
  };
}

async function main(): Promise<void> {
  const limit = Number(flags.limit);
  if (flags['dataset-only']) {
    const dir = path.resolve(flags['dataset-only']);
    const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-prep-'));
    try {
      const store = new ArtifactStore(root);
      const { ref, counts } = await prepare(store, limit);
      spawnSync('cp', ['-r', store.resolve(ref), dir], { stdio: 'inherit' });
      console.log(`dataset (${counts}) written to ${dir}`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
    return;
  }
  const runs = Number(flags.runs);
  const p = { epochs: Number(flags.epochs), devices: Number(flags.devices) };
  if (![runs, p.epochs, p.devices].every((n) => Number.isInteger(n) && n >= 1) || !Number.isInteger(limit) || limit < 0)
    throw new Error('--runs, --epochs and --devices must be positive whole numbers, --limit a whole number');
  const python = stagePython();
  if (!python) throw new Error('no Python that imports tensorflow and capstan_stage: run npm run setup:python, or set CAPSTAN_PYTHON');
  const tf = spawnSync(python, ['-c', 'import tensorflow as tf, keras, capstan_stage; print(tf.__version__, keras.__version__, capstan_stage.SDK)'], {
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' },
  })
    .stdout.trim()
    .split(' ');
  console.log(
    `machine: ${machineLine()}; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(`python: ${python}; TensorFlow ${tf[0]} (CPU), Keras ${tf[1]}, ${tf[2]}`);

  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-pystage-'));
  const store = new ArtifactStore(root);
  try {
    const { ref: dataset, counts } = await prepare(store, limit);
    console.log(
      `data: ${counts}; ${p.epochs} epochs, batch 32, MirroredStrategy over ${p.devices} device(s); ${runs} pair(s) of runs, bare and stage alternating`,
    );
    // The bare run gets the environment the worker gives the stage (manifest env + what it passes on).
    const manifestEnv: Record<string, string> = { TF_CPP_MIN_LOG_LEVEL: '2', KERAS_BACKEND: 'tensorflow', PYTHONDONTWRITEBYTECODE: '1' };
    const env: Record<string, string> = { ...manifestEnv, PYTHONUNBUFFERED: '1' };
    for (const k of ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR']) if (process.env[k] !== undefined) env[k] = process.env[k]!;

    const bare: Side[] = [];
    const staged: Side[] = [];
    const overheads: number[] = [];
    for (let r = 0; r < runs; r++) {
      const one = async (which: 'bare' | 'stage') => {
        const s = which === 'bare' ? await runBare(python, store.resolve(dataset), env, p) : await runStage(store, python, dataset, `stage-${r}`, p);
        (which === 'bare' ? bare : staged).push(s);
        process.stdout.write(`${JSON.stringify({ kind: 'run', side: which, run: r, ...s, loadAverage: Number(os.loadavg()[0]!.toFixed(2)) })}\n`);
      };
      if (r % 2 === 0) {
        await one('bare');
        await one('stage');
      } else {
        await one('stage');
        await one('bare');
      }
      const b = bare[r]!;
      const s = staged[r]!;
      overheads.push((s.wall - s.firstMessage - (b.wall - b.firstMessage)) / (b.wall - b.firstMessage));
    }

    const med = (xs: Side[], k: 'wall' | 'firstMessage' | 'cpu' | 'trainSeconds' | 'samplesPerSec' | 'testAccuracy') => median(xs.map((x) => x[k]));
    const head = ['side', 'wall s', 'start-up s (p50)', 'start-up p90', 'after start-up s', 'not training s', 'CPU s', 'train s', 'samples/s', 'test acc'];
    const row = (name: string, xs: Side[]) => [
      name,
      med(xs, 'wall').toFixed(2),
      med(xs, 'firstMessage').toFixed(3),
      quantile(
        xs.map((x) => x.firstMessage),
        0.9,
      ).toFixed(3),
      median(xs.map((x) => x.wall - x.firstMessage)).toFixed(2),
      median(xs.map(notTraining)).toFixed(2),
      med(xs, 'cpu').toFixed(1),
      med(xs, 'trainSeconds').toFixed(1),
      Math.round(med(xs, 'samplesPerSec')).toLocaleString('en-US'),
      `${(med(xs, 'testAccuracy') * 100).toFixed(2)} %`,
    ];
    const table = [row('bare python train.py', bare), row('seed:keras-mlp stage', staged)];
    const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
    console.log(`\nmedians of ${runs} run(s) per side:`);
    for (const cells of [head, ...table])
      console.log(`  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}`.trimEnd());
    const overhead = median(overheads);
    const bareAfter = median(bare.map((x) => x.wall - x.firstMessage));
    const fixed = median(staged.map(notTraining)) - median(bare.map(notTraining));
    const around = median(staged.map((x) => x.wall - x.processWall!));
    console.log(
      `  overhead of the stage after start-up, pair by pair: ${(overhead * 100).toFixed(2)} % (median; the pairs: ${overheads.map((o) => `${(o * 100).toFixed(1)} %`).join(', ')}) — training speed varies run to run, so this spread is the machine's, not the stage's`,
    );
    console.log(
      `  the stage's own time after start-up, from the not-training seconds: ${fixed.toFixed(2)} s = ${((fixed / bareAfter) * 100).toFixed(2)} % of the bare run's ${bareAfter.toFixed(1)} s; of it, outside the process (context, output folders, sealing): ${around.toFixed(2)} s`,
    );
    console.log(
      `  CPU: stage ${med(staged, 'cpu').toFixed(1)} s (launcher ${median(staged.map((x) => x.launcherCpu!)).toFixed(2)} s of it) vs bare ${med(bare, 'cpu').toFixed(1)} s`,
    );
    console.log(
      `  start-up (launch → first message): bare p50 ${med(bare, 'firstMessage').toFixed(3)} s, stage p50 ${med(staged, 'firstMessage').toFixed(3)} s`,
    );
    process.stdout.write(
      `${JSON.stringify({
        kind: 'summary',
        runs,
        ...p,
        limit,
        overheadAfterStartup: overhead,
        overheads,
        fixedOverheadSeconds: fixed,
        fixedOverheadShare: fixed / bareAfter,
        outsideProcessSeconds: around,
        bare: { wall: med(bare, 'wall'), firstMessageP50: med(bare, 'firstMessage'), cpu: med(bare, 'cpu'), trainSeconds: med(bare, 'trainSeconds') },
        stage: {
          wall: med(staged, 'wall'),
          firstMessageP50: med(staged, 'firstMessage'),
          cpu: med(staged, 'cpu'),
          launcherCpu: median(staged.map((x) => x.launcherCpu!)),
          trainSeconds: med(staged, 'trainSeconds'),
        },
      })}\n`,
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
