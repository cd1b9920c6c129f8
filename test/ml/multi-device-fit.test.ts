import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTf } from '../../ml/backend.js';
import { saveModel } from '../../ml/models/io.js';
import { buildMlp, seedMlpSpec } from '../../ml/models/mlp.js';
import { averageFile, replicaFile, replicaSchedule, roundSegments, shardRows } from '../../ml/training/replica-job.js';
import { flatWeights, meanOf } from '../../ml/training/weights.js';
import type { ArtifactRef, StageResult } from '../../plugins/contract.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { multiDeviceFitStage, syncDirOf } from '../../plugins/core/multi-device-fit/index.js';
import { makeContext, tmpStore, type TestContext } from './helpers.js';

let store: Awaited<ReturnType<typeof tmpStore>>;
let dataset: ArtifactRef;
let model: ArtifactRef;
const HIDDEN = 784 * 128;
/** Every third weight of dense_1/kernel (scattered over rows and units, so no unit dies). */
const pruned = (i: number) => i % 3 === 0;

beforeAll(async () => {
  store = await tmpStore();
  const prep = dataPrepStage();
  const res = await prep.run(makeContext({ store: store.store, stageId: 'prep' }), prep.paramsSchema.parse({ limit: 4000, seed: 3 }), {});
  dataset = res.outputs.dataset!;

  // An input model as prune-quantize would hand it over: a third of the weights of the first
  // kernel pruned to zero, with masks.json + masks.bin beside model.json.
  const { tf } = await loadTf();
  const m = buildMlp(tf, seedMlpSpec);
  const { flat } = flatWeights(m);
  const mask = new Uint8Array(HIDDEN);
  for (let i = 0; i < HIDDEN; i++) {
    mask[i] = pruned(i) ? 0 : 1;
    if (!mask[i]) flat[i] = 0;
  }
  const { setFlatWeights } = await import('../../ml/training/weights.js');
  setFlatWeights(tf, m, flat);
  const dir = store.store.dirFor('run-1', 'prune', 'model');
  await saveModel(m, dir);
  await writeFile(
    path.join(dir, 'masks.json'),
    JSON.stringify({
      format: 'capstan-masks/1',
      file: 'masks.bin',
      dtype: 'uint8',
      masks: [{ name: 'dense_1/kernel', shape: [784, 128], offset: 0, length: HIDDEN, dtype: 'uint8' }],
    }),
  );
  await writeFile(path.join(dir, 'masks.bin'), mask);
  model = await store.store.seal('model', dir);
});
afterAll(async () => {
  await store.cleanup();
});

async function readVec(file: string): Promise<Float32Array> {
  const b = await readFile(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

describe('core:multi-device-fit', () => {
  it('declares a data-parallel gpu stage with 2 replicas by default', () => {
    const plugin = multiDeviceFitStage();
    const params = plugin.paramsSchema.parse({});
    expect(plugin.resource).toBe('gpu');
    expect(plugin.dataParallel?.replicas(params)).toBe(2);
  });

  it('trains two replicas in parallel processes and publishes the average of their last round, keeping pruned zeros', async () => {
    const plugin = multiDeviceFitStage();
    const params = plugin.paramsSchema.parse({ replicas: 2, epochs: 1, syncEverySteps: 20 });
    const stageId = 'fit';
    const ctxs = [0, 1].map((index) => makeContext({ store: store.store, stageId, replica: { index, count: 2 } }));
    // Each replica blocks at every sync point until the other has written its weights, so
    // this only completes if both processes run at the same time.
    const results: StageResult[] = await Promise.all(ctxs.map((ctx) => plugin.run(ctx, params, { model, dataset })));
    for (const [i, r] of results.entries()) {
      // 3600 rows in global batches of 2 × 32: 57 steps, the last one 16 rows (8 each), kept.
      expect(r.metrics).toMatchObject({
        replica: i,
        replicas: 2,
        rounds: 3,
        resumedFromRound: 0,
        steps: 57,
        samples: 1800,
        shardSize: 1800,
        averagedOptimizerState: true,
      });
      expect(r.metrics.tfBackend).toMatch(/^(node-gpu|node|wasm|cpu)$/);
      expect(r.metrics.trainLoop).toBe('step');
      // The replica process's CPU time is reported to the meter.
      expect(ctxs[i]!.reported().cpuSeconds).toBeCloseTo(r.metrics.cpuSeconds as number, 4);
    }
    expect(ctxs[0]!.beats).toContainEqual({ round: 3, checkpoint: expect.stringMatching(/^artifact:.*round-00003\/avg\.bin$/) });

    const reduced = await plugin.dataParallel!.reduce(makeContext({ store: store.store, stageId }), params, { model, dataset }, results);
    expect(reduced.metrics).toMatchObject({ replicas: 2, rounds: 3, samples: 3600 });
    expect(reduced.metrics.testAccuracy as number).toBeGreaterThan(0.6); // chance is 0.1
    expect(reduced.metrics.samplesPerSecTotal as number).toBeGreaterThan(0);

    // Final weights = mean of the two replicas' weights of the last round, masked.
    const sync = await syncDirOf(makeContext({ store: store.store, stageId }), params, { model, dataset });
    const final = await readVec(path.join(store.store.resolve(reduced.outputs.model!), 'weights.bin'));
    // A replica publishes its weights, then Adam's first and second moments (averaged too).
    const p0 = await readVec(replicaFile(sync, 3, 0));
    const p1 = await readVec(replicaFile(sync, 3, 1));
    expect(p0.length).toBe(3 * final.length);
    const r0 = p0.subarray(0, final.length);
    const r1 = p1.subarray(0, final.length);
    // Adam's moments were averaged with the weights: avg.bin holds their mean after the weights.
    const avgRound = await readVec(averageFile(sync, 3));
    expect(avgRound.length).toBe(3 * final.length);
    expect(avgRound.subarray(final.length)).toEqual(meanOf([p0, p1]).subarray(final.length));
    expect(p0.subarray(final.length)).not.toEqual(p1.subarray(final.length));
    expect(avgRound.subarray(2 * final.length).some((v) => v > 0)).toBe(true);
    expect(r0).not.toEqual(r1); // the replicas did train on different shards
    const mean = meanOf([r0, r1]);
    let maxDiff = 0;
    for (let i = 0; i < final.length; i++) {
      const expected = i < HIDDEN && pruned(i) ? 0 : mean[i]!;
      maxDiff = Math.max(maxDiff, Math.abs(final[i]! - expected));
    }
    expect(maxDiff).toBe(0);
    // Pruned weights stayed zero although Adam moved them inside each round.
    expect(r0.subarray(0, HIDDEN).some((v, i) => pruned(i) && v !== 0)).toBe(true);
    expect(final.subarray(0, HIDDEN).every((v, i) => !pruned(i) || v === 0)).toBe(true);
    const outFiles = await readdir(store.store.resolve(reduced.outputs.model!));
    expect(outFiles.sort()).toEqual(['masks.bin', 'masks.json', 'model.json', 'weights.bin']);
  });

  it('a replica retried alone resumes from the last averaged round while its peer waits', async () => {
    const plugin = multiDeviceFitStage();
    const params = plugin.paramsSchema.parse({ replicas: 2, epochs: 1, syncEverySteps: 4 });
    const stageId = 'fit-retry';
    const ctx0 = makeContext({ store: store.store, stageId, replica: { index: 0, count: 2 } });
    const ac = new AbortController();
    const ctx1a = makeContext({ store: store.store, stageId, replica: { index: 1, count: 2 }, signal: ac.signal });
    const peer = plugin.run(ctx0, params, { model, dataset });
    const failing = plugin.run(ctx1a, params, { model, dataset });
    // Kill replica 1 once it has reported an averaged round (as a crashed worker would).
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (ctx1a.beats.some((b) => (b as { round: number }).round >= 2)) {
          clearInterval(t);
          ac.abort(new Error('worker lost'));
          resolve();
        }
      }, 20);
    });
    await expect(failing).rejects.toThrow(/worker lost/);
    const last = [...ctx1a.beats].reverse().find((b) => (b as { round: number }).round > 0) as { round: number; checkpoint: string };

    const ctx1b: TestContext = makeContext({ store: store.store, stageId, replica: { index: 1, count: 2 }, attempt: 2, lastCheckpoint: last });
    const [r0, r1] = await Promise.all([peer, plugin.run(ctx1b, params, { model, dataset })]);
    expect(r1.metrics.resumedFromRound as number).toBeGreaterThanOrEqual(last.round);
    expect(r1.metrics.resumedFromRound as number).toBeGreaterThan(0);
    expect(r0.metrics.resumedFromRound).toBe(0);
    expect(r0.metrics.rounds).toBe(15);
    expect(r1.metrics.steps as number).toBeLessThan(r0.metrics.steps as number);
    const sync = await syncDirOf(makeContext({ store: store.store, stageId }), params, { model, dataset });
    const a0 = await readVec(path.join(store.store.resolve(r0.outputs.model!), 'weights.bin'));
    const a1 = await readVec(path.join(store.store.resolve(r1.outputs.model!), 'weights.bin'));
    expect(a0).toEqual(a1);
    expect(a0).toEqual((await readVec(averageFile(sync, 15))).subarray(0, a0.length));
    // While replica 1 was down, replica 0 waited at a round's barrier and said for whom (StageRun.wait shows it).
    const after = last.round + 1;
    expect(ctx0.beats).toContainEqual(expect.objectContaining({ barrier: { round: expect.any(Number), waitingFor: [1], since: expect.any(String) } }));
    const waits = ctx0.beats.flatMap((b) => ((b as { barrier?: { round: number } }).barrier ? [(b as { barrier: { round: number } }).barrier.round] : []));
    expect(Math.max(...waits)).toBeGreaterThanOrEqual(after);
  });
});

describe('replica shards', () => {
  it('reshuffles every epoch: each epoch deals all rows once over the replicas, in another order', () => {
    const n = 100;
    const all = Array.from({ length: n }, (_, i) => i);
    const epoch = (e: number) => [0, 1, 2].map((i) => Array.from(shardRows(n, 42, i, 3, e)));
    const e0 = epoch(0);
    const e1 = epoch(1);
    for (const shards of [e0, e1]) expect(shards.flat().sort((a, b) => a - b)).toEqual(all);
    expect(e0.map((s) => s.length)).toEqual([34, 33, 33]);
    expect(e1[0]).not.toEqual(e0[0]);
    expect(new Set(e1[0]).size).toBe(34);
    expect(epoch(1)).toEqual(e1); // deterministic per seed and epoch
    expect(Array.from(shardRows(n, 43, 0, 3, 1))).not.toEqual(e1[0]);
  });

  it('keeps the last partial batch of every epoch, on every replica, with the same step count for all', () => {
    // 100 rows, 3 replicas × batch 8 = global batches of 24: 5 steps an epoch, the last one 4 rows.
    const sched = replicaSchedule({ trainCount: 100, replicas: 3, batchSize: 8, epochs: 2, syncEverySteps: 3 });
    expect(sched).toEqual({ stepsPerEpoch: 5, totalSteps: 10, rounds: 4 });
    for (const index of [0, 1, 2]) {
      const opts = { trainCount: 100, seed: 42, index, count: 3, batchSize: 8, stepsPerEpoch: 5 };
      const seen: number[][] = [[], []];
      for (let round = 1; round <= sched.rounds; round++) {
        const first = (round - 1) * 3;
        const segments = roundSegments(opts, first, Math.min(round * 3, sched.totalSteps));
        // A round that crosses an epoch's end is split there (only the epoch's last batch is partial).
        if (round === 2) expect(segments.map((s) => s.length)).toEqual([8 + shardRows(100, 42, index, 3, 0).length - 32, 8]);
        let step = first;
        for (const seg of segments) {
          const e = Math.floor(step / 5);
          seen[e]!.push(...seg);
          step += Math.ceil(seg.length / 8);
        }
      }
      for (const e of [0, 1]) expect(seen[e]).toEqual(Array.from(shardRows(100, 42, index, 3, e)));
    }
  });
});
