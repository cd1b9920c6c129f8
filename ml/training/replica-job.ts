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

/** The schedule every replica derives from the same numbers, so they agree on rounds without talking. */
export function replicaSchedule(opts: { trainCount: number; replicas: number; batchSize: number; epochs: number; syncEverySteps: number }): {
  stepsPerEpoch: number;
  totalSteps: number;
  rounds: number;
} {
  const perReplica = Math.floor(opts.trainCount / opts.replicas);
  const stepsPerEpoch = Math.max(1, Math.floor(perReplica / opts.batchSize));
  const totalSteps = stepsPerEpoch * opts.epochs;
  return { stepsPerEpoch, totalSteps, rounds: Math.ceil(totalSteps / opts.syncEverySteps) };
}

/** Row indices (into the train split) of replica `index`'s shard: a seeded deal of the rows. */
export function shardRows(trainCount: number, seed: number, index: number, count: number): Uint32Array {
  const perm = permutation(trainCount, mixSeed(seed, 7));
  const out: number[] = [];
  for (let i = index; i < perm.length; i += count) out.push(perm[i]!);
  return Uint32Array.from(out);
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
 * own shard, publish the weights for the round, wait for all replicas, average (then re-apply
 * pruning masks), continue. Averaged weights of every round are written to `avg.bin`, so a
 * replica that is retried alone resumes from the latest average.
 */
export async function runReplicaJob(job: ReplicaJob, progress: (p: ReplicaProgress) => void): Promise<ReplicaResult> {
  const { tf, backend } = await loadTf(job.backend ? { prefer: job.backend } : {});
  const ds = await readDataset(job.datasetDir, { splits: ['train', 'validation'] });
  const { index, count } = job.replica;
  const train = ds.splits.train;
  const rowSize = ds.featureShape.reduce((a, b) => a * b, 1);
  const rows = shardRows(train.count, job.seed, index, count);
  const shard = {
    x: inputsOf(ds, { count: rows.length, x: gatherRows(train.x, rowSize, rows), y: new Uint8Array(0) }),
    y: gatherRows(train.y, 1, rows),
    featureShape: ds.featureShape,
  };
  const sched = replicaSchedule({ trainCount: train.count, replicas: count, batchSize: job.batchSize, epochs: job.epochs, syncEverySteps: job.syncEverySteps });

  const model = await loadModel(tf, job.modelDir);
  compileClassifier(tf, model, { learningRate: job.learningRate });
  // The step loop when the model allows it (ml/training/step-loop.ts), else model.fit.
  const step = await createStepLoop(tf, model);
  const { layout } = flatWeights(model);
  const masks = await readMasks(job.modelDir, layout);

  await mkdir(job.syncDir, { recursive: true });
  const resumeFrom = Math.max(job.resumeRound ?? 0, await latestAveragedRound(job.syncDir));
  if (resumeFrom > 0) {
    setFlatWeights(tf, model, await readVector(averageFile(job.syncDir, resumeFrom)));
  } else if (masks) {
    const { flat } = flatWeights(model);
    applyMask(flat, masks.mask);
    setFlatWeights(tf, model, flat);
  }
  if (!('unsupported' in step)) step.reloadWeights();

  const order = new Map<number, Uint32Array>();
  const orderFor = (epoch: number) => {
    let o = order.get(epoch);
    if (!o) {
      order.clear();
      o = permutation(shard.y.length, mixSeed(job.seed, epoch, index));
      order.set(epoch, o);
    }
    return o;
  };

  let trainSeconds = 0;
  let waitSeconds = 0;
  let steps = 0;
  for (let round = resumeFrom + 1; round <= sched.rounds; round++) {
    const first = (round - 1) * job.syncEverySteps;
    const last = Math.min(round * job.syncEverySteps, sched.totalSteps);
    const idx: number[] = [];
    for (let s = first; s < last; s++) {
      const epoch = Math.floor(s / sched.stepsPerEpoch);
      const pos = s % sched.stepsPerEpoch;
      const o = orderFor(epoch);
      for (let j = 0; j < job.batchSize; j++) idx.push(o[pos * job.batchSize + j]!);
    }
    const batchRows = {
      x: gatherRows(shard.x, rowSize, idx),
      y: gatherRows(shard.y, 1, idx),
      featureShape: shard.featureShape,
    };
    const t0 = performance.now();
    if ('unsupported' in step) {
      await fitPass(tf, model, batchRows, { batchSize: job.batchSize });
    } else {
      await step.trainPass(batchRows, { batchSize: job.batchSize, seed: mixSeed(job.seed, round, index) });
      await step.commit({ optimizer: false });
    }
    trainSeconds += (performance.now() - t0) / 1000;
    steps += last - first;

    await writeVectorAtomic(replicaFile(job.syncDir, round, index), flatWeights(model).flat);
    const w0 = performance.now();
    const peers = await waitForPeers(job, round, (barrier) =>
      progress({ round: round - 1, rounds: sched.rounds, checkpoint: averageFile(job.syncDir, round - 1), waitingForPeers: true, barrier }),
    );
    waitSeconds += (performance.now() - w0) / 1000;
    const avg = meanOf(peers);
    applyMask(avg, masks?.mask);
    await writeVectorAtomic(averageFile(job.syncDir, round), avg);
    setFlatWeights(tf, model, avg);
    if (!('unsupported' in step)) step.reloadWeights();
    if (round > 2) await rm(roundDir(job.syncDir, round - 2), { recursive: true, force: true });
    progress({ round, rounds: sched.rounds, checkpoint: averageFile(job.syncDir, round) });
  }

  if (!('unsupported' in step)) step.dispose();
  const val = evaluate(tf, model, labelled(ds, ds.splits.validation));
  await rm(job.outDir, { recursive: true, force: true });
  await saveModel(model, job.outDir);
  const samples = steps * job.batchSize;
  return {
    backend,
    trainLoop: 'unsupported' in step ? 'model.fit' : 'step',
    ...('unsupported' in step ? { fitBecause: step.unsupported } : {}),
    resumedFromRound: resumeFrom,
    rounds: sched.rounds,
    steps,
    samples,
    trainSeconds,
    waitSeconds,
    samplesPerSec: trainSeconds > 0 ? samples / trainSeconds : 0,
    shardSize: shard.y.length,
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
