import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadTf } from '../backend.js';
import { gatherRows, inputsOf, readDataset } from '../data/dataset.js';
import { mixSeed, permutation } from '../data/rng.js';
import { loadModel, saveModel } from '../models/io.js';
import { compileClassifier } from '../models/mlp.js';
import type { ReplicaJob, ReplicaProgress, ReplicaResult } from './jobs.js';
import { labelled } from './pretrain-job.js';
import { createStepLoop } from './step-loop.js';
import { evaluate, fitPass } from './train-loop.js';
import { applyMask, flatWeights, meanOf, readMasks, setFlatWeights } from './weights.js';

export class SyncTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SyncTimeoutError';
  }
}

export function roundDir(syncDir: string, round: number): string {
  return path.join(syncDir, `round-${String(round).padStart(5, '0')}`);
}

export function replicaFile(syncDir: string, round: number, index: number): string {
  return path.join(roundDir(syncDir, round), `replica-${index}.bin`);
}

export function averageFile(syncDir: string, round: number): string {
  return path.join(roundDir(syncDir, round), 'avg.bin');
}

/**
 * The schedule every replica derives from the same numbers, so they agree on rounds without
 * talking. A step is one global batch of `batchSize × replicas` rows (each replica takes its
 * `batchSize`); an epoch is every row once, its last global batch partial when the rows do not
 * divide evenly (it is kept, not dropped).
 */
export function replicaSchedule(opts: { trainCount: number; replicas: number; batchSize: number; epochs: number; syncEverySteps: number }): {
  stepsPerEpoch: number;
  totalSteps: number;
  rounds: number;
} {
  const stepsPerEpoch = Math.max(1, Math.ceil(opts.trainCount / (opts.batchSize * opts.replicas)));
  const totalSteps = stepsPerEpoch * opts.epochs;
  return { stepsPerEpoch, totalSteps, rounds: Math.ceil(totalSteps / opts.syncEverySteps) };
}

/**
 * Row indices (into the train split) of replica `index`'s shard in epoch `epoch` (0-based), in
 * training order: the epoch's seeded permutation of all rows, dealt round-robin. Every epoch
 * reshuffles, so a replica sees other rows in every epoch, and the shards of one epoch together are
 * every row once. Step `s` of the epoch trains on rows `s·batchSize …` of the shard: the replicas'
 * batches of one step together are the epoch's global batch `s`.
 */
export function shardRows(trainCount: number, seed: number, index: number, count: number, epoch = 0): Uint32Array {
  const perm = permutation(trainCount, mixSeed(seed, 7, epoch));
  const out: number[] = [];
  for (let i = index; i < perm.length; i += count) out.push(perm[i]!);
  return Uint32Array.from(out);
}

/**
 * The shard rows replica `index` trains on in global steps `first … last-1`, split where an epoch
 * ends (a pass of the step loop or model.fit batches them: only an epoch's last batch is partial).
 */
export function roundSegments(
  opts: { trainCount: number; seed: number; index: number; count: number; batchSize: number; stepsPerEpoch: number },
  first: number,
  last: number,
  shardOf: (epoch: number) => Uint32Array = (e) => shardRows(opts.trainCount, opts.seed, opts.index, opts.count, e),
): Uint32Array[] {
  const out: Uint32Array[] = [];
  let s = first;
  while (s < last) {
    const epoch = Math.floor(s / opts.stepsPerEpoch);
    const pos = s % opts.stepsPerEpoch;
    const end = Math.min(last, (epoch + 1) * opts.stepsPerEpoch);
    const shard = shardOf(epoch);
    const rows = shard.subarray(Math.min(shard.length, pos * opts.batchSize), Math.min(shard.length, (pos + (end - s)) * opts.batchSize));
    if (rows.length) out.push(rows);
    s = end;
  }
  return out;
}

/** The latest round whose averaged weights are on disk (0 = none). */
export async function latestAveragedRound(syncDir: string): Promise<number> {
  const names = await readdir(syncDir).catch(() => [] as string[]);
  let best = 0;
  for (const n of names) {
    const m = /^round-(\d+)$/.exec(n);
    if (!m) continue;
    const r = Number(m[1]);
    if (r > best && (await exists(averageFile(syncDir, r)))) best = r;
  }
  return best;
}

/**
 * One replica of data-parallel training with local SGD: train `syncEverySteps` steps on the
 * own shard (reshuffled every epoch, the epoch's last partial batch kept), publish the weights for
 * the round — with Adam's moments when the step loop trains — wait for all replicas, average
 * (then re-apply pruning masks), continue. Averaged weights (and moments) of every round are
 * written to `avg.bin`, so a replica that is retried alone resumes from the latest average.
 */
export async function runReplicaJob(job: ReplicaJob, progress: (p: ReplicaProgress) => void): Promise<ReplicaResult> {
  const { tf, backend } = await loadTf(job.backend ? { prefer: job.backend } : {});
  const ds = await readDataset(job.datasetDir, { splits: ['train', 'validation'] });
  const { index, count } = job.replica;
  const train = ds.splits.train;
  const rowSize = ds.featureShape.reduce((a, b) => a * b, 1);
  const sched = replicaSchedule({ trainCount: train.count, replicas: count, batchSize: job.batchSize, epochs: job.epochs, syncEverySteps: job.syncEverySteps });
  const shards = new Map<number, Uint32Array>();
  const shardOf = (epoch: number) => {
    let o = shards.get(epoch);
    if (!o) {
      shards.clear();
      o = shardRows(train.count, job.seed, index, count, epoch);
      shards.set(epoch, o);
    }
    return o;
  };

  const model = await loadModel(tf, job.modelDir);
  compileClassifier(tf, model, { learningRate: job.learningRate });
  // The step loop when the model allows it (ml/training/step-loop.ts), else model.fit.
  const step = await createStepLoop(tf, model);
  const { layout } = flatWeights(model);
  const weightCount = layout.reduce((n, l) => n + l.size, 0);
  const masks = await readMasks(job.modelDir, layout);
  // model.fit keeps Adam's moments inside tfjs's optimizer: there only the weights are averaged.
  const averageMoments = !('unsupported' in step);

  await mkdir(job.syncDir, { recursive: true });
  const resumeFrom = Math.max(job.resumeRound ?? 0, await latestAveragedRound(job.syncDir));
  if (resumeFrom > 0) {
    loadAverage(await readVector(averageFile(job.syncDir, resumeFrom)), Math.min(resumeFrom * job.syncEverySteps, sched.totalSteps));
  } else if (masks) {
    const { flat } = flatWeights(model);
    applyMask(flat, masks.mask);
    setFlatWeights(tf, model, flat);
  }
  if (!('unsupported' in step)) step.reloadWeights();

  /** Takes an averaged vector: the weights, then (when it has them) Adam's m and v, with the step count they belong to. */
  function loadAverage(avg: Float32Array, iterations: number): void {
    setFlatWeights(tf, model, avg.subarray(0, weightCount));
    if (averageMoments && avg.length === 3 * weightCount)
      step.setMoments(avg.subarray(weightCount, 2 * weightCount), avg.subarray(2 * weightCount), iterations);
  }

  let trainSeconds = 0;
  let waitSeconds = 0;
  let steps = 0;
  let samples = 0;
  let shardSize = 0;
  for (let round = resumeFrom + 1; round <= sched.rounds; round++) {
    const first = (round - 1) * job.syncEverySteps;
    const last = Math.min(round * job.syncEverySteps, sched.totalSteps);
    const segments = roundSegments(
      { trainCount: train.count, seed: job.seed, index, count, batchSize: job.batchSize, stepsPerEpoch: sched.stepsPerEpoch },
      first,
      last,
      shardOf,
    );
    shardSize = shardOf(Math.floor((last - 1) / sched.stepsPerEpoch)).length;
    const t0 = performance.now();
    for (const rows of segments) {
      // Normalised per segment: the whole train split as float32 would be 4× its bytes per replica.
      const batchRows = {
        x: inputsOf(ds, { count: rows.length, x: gatherRows(train.x, rowSize, rows), y: new Uint8Array(0) }),
        y: gatherRows(train.y, 1, rows),
        featureShape: ds.featureShape,
      };
      if ('unsupported' in step) await fitPass(tf, model, batchRows, { batchSize: job.batchSize });
      else await step.trainPass(batchRows, { batchSize: job.batchSize, seed: mixSeed(job.seed, round, index) });
      steps += Math.ceil(rows.length / job.batchSize);
      samples += rows.length;
    }
    if (!('unsupported' in step)) await step.commit({ optimizer: false });
    trainSeconds += (performance.now() - t0) / 1000;

    await writeVectorAtomic(replicaFile(job.syncDir, round, index), publishVector());
    const w0 = performance.now();
    const peers = await waitForPeers(job, round, (barrier) =>
      progress({ round: round - 1, rounds: sched.rounds, checkpoint: averageFile(job.syncDir, round - 1), waitingForPeers: true, barrier }),
    );
    waitSeconds += (performance.now() - w0) / 1000;
    const avg = meanOf(peers);
    applyMask(avg.subarray(0, weightCount), masks?.mask);
    await writeVectorAtomic(averageFile(job.syncDir, round), avg);
    loadAverage(avg, last);
    if (!('unsupported' in step)) step.reloadWeights();
    if (round > 2) await rm(roundDir(job.syncDir, round - 2), { recursive: true, force: true });
    progress({ round, rounds: sched.rounds, checkpoint: averageFile(job.syncDir, round) });
  }

  /** What this replica publishes for a round: its weights, and Adam's moments after them when averaged. */
  function publishVector(): Float32Array {
    const { flat } = flatWeights(model);
    if (!averageMoments || 'unsupported' in step) return flat;
    const { m, v } = step.moments();
    const out = new Float32Array(3 * weightCount);
    out.set(flat, 0);
    out.set(m, weightCount);
    out.set(v, 2 * weightCount);
    return out;
  }

  if (!('unsupported' in step)) step.dispose();
  const val = evaluate(tf, model, labelled(ds, ds.splits.validation));
  await rm(job.outDir, { recursive: true, force: true });
  await saveModel(model, job.outDir);
  return {
    backend,
    trainLoop: 'unsupported' in step ? 'model.fit' : 'step',
    ...('unsupported' in step ? { fitBecause: step.unsupported } : {}),
    averagedOptimizerState: averageMoments,
    resumedFromRound: resumeFrom,
    rounds: sched.rounds,
    steps,
    samples,
    trainSeconds,
    waitSeconds,
    samplesPerSec: trainSeconds > 0 ? samples / trainSeconds : 0,
    shardSize,
    maskedWeights: masks?.masked ?? 0,
    prunedWeights: masks?.pruned ?? 0,
    validation: val,
  };
}

/** Waits until every replica published its weights for `round`; meanwhile reports (about every second) whom it still waits for. */
async function waitForPeers(job: ReplicaJob, round: number, heartbeat: (barrier: NonNullable<ReplicaProgress['barrier']>) => void): Promise<Float32Array[]> {
  const deadline = Date.now() + job.syncTimeoutMs;
  const since = new Date().toISOString();
  let lastBeat = 0;
  for (;;) {
    const files = Array.from({ length: job.replica.count }, (_, i) => replicaFile(job.syncDir, round, i));
    const present = await Promise.all(files.map(exists));
    if (present.every(Boolean)) return Promise.all(files.map(readVector));
    // A peer that already averaged this round (and moved on) leaves avg.bin: use it.
    if (await exists(averageFile(job.syncDir, round))) {
      const missing = files.filter((_, i) => !present[i]);
      if (missing.length) return [await readVector(averageFile(job.syncDir, round))];
    }
    if (Date.now() > deadline) {
      const missing = files.filter((_, i) => !present[i]).map((f) => path.basename(f));
      throw new SyncTimeoutError(`round ${round}: waited ${job.syncTimeoutMs} ms for ${missing.join(', ')}`);
    }
    if (Date.now() - lastBeat > 1000) {
      heartbeat({ round, waitingFor: present.flatMap((here, i) => (here ? [] : [i])), since });
      lastBeat = Date.now();
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function readVector(file: string): Promise<Float32Array> {
  const b = await readFile(file);
  const copy = new Uint8Array(b.length);
  copy.set(b);
  return new Float32Array(copy.buffer);
}

async function writeVectorAtomic(file: string, v: Float32Array): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  await rename(tmp, file);
}
