import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { hashTree } from '../../lib/artifacts.js';
import { loadTf } from '../../ml/backend.js';
import { loadModel } from '../../ml/models/io.js';
import type { ArtifactRef } from '../../plugins/contract.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { dispatch, makeContext, tmpStore } from './helpers.js';

let store: Awaited<ReturnType<typeof tmpStore>>;
let dataset: ArtifactRef;

beforeAll(async () => {
  store = await tmpStore();
  const prep = dataPrepStage();
  const res = await prep.run(makeContext({ store: store.store, stageId: 'prep' }), prep.paramsSchema.parse({ limit: 3000, seed: 7 }), {});
  dataset = res.outputs.dataset!;
});
afterAll(async () => {
  await store.cleanup();
});

describe('core:pretrain', () => {
  it('trains the seed MLP in a child process, well above chance, with per-epoch metrics and a loadable model', async () => {
    const plugin = pretrainStage();
    const params = plugin.paramsSchema.parse({ epochs: 2 });
    expect(params).toMatchObject({ batchSize: 32, learningRate: 1e-3, model: { hiddenUnits: [128], activation: 'relu' } });
    const ctx = makeContext({ store: store.store, stageId: 'train' });
    const res = await plugin.run(ctx, params, { dataset });
    const m = res.metrics;
    expect(m.tfBackend).toMatch(/^(node-gpu|node|wasm|cpu)$/);
    expect(m.resumedFromEpoch).toBe(0);
    expect(m.trainLoop).toBe('step'); // ml/training/step-loop.ts, not model.fit
    expect(m.epochsRun).toBe(2);
    expect(m.testAccuracy as number).toBeGreaterThan(0.7); // chance is 0.1
    expect(m.epoch02ValAccuracy as number).toBeGreaterThan(0.7);
    expect(m.epoch02TrainLoss as number).toBeLessThan(m.epoch01TrainLoss as number);
    expect(m.cpuSeconds as number).toBeGreaterThan(0);
    // The child's CPU time goes to the meter (the dispatch adds it to the attempt's usage).
    expect(ctx.reported().cpuSeconds).toBeCloseTo(m.cpuSeconds as number, 4);
    const epochs = (beats: unknown[]) => [...new Set(beats.map((b) => (b as { epoch: number }).epoch))];
    expect(epochs(ctx.beats).filter((e) => e > 0)).toEqual([1, 2]);
    expect(ctx.beats.at(-1)).toMatchObject({ epoch: 2, checkpoint: expect.stringMatching(/^artifact:.*epoch-0002$/) });

    // The saved model loads back with a plain tf.loadLayersModel (custom folder handler) and predicts.
    const modelDir = store.store.resolve(res.outputs.model!);
    const json = JSON.parse(await readFile(path.join(modelDir, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
    expect(json.weightsManifest[0]!.paths).toEqual(['./weights.bin']);
    expect((await stat(path.join(modelDir, 'weights.bin'))).size).toBe((784 * 128 + 128 + 128 * 10 + 10) * 4);
    const { tf } = await loadTf();
    const model = await loadModel(tf, modelDir);
    const p = model.predict(tf.zeros([1, 28, 28])) as import('@tensorflow/tfjs').Tensor;
    expect(p.shape).toEqual([1, 10]);
    expect(p.sum().dataSync()[0]).toBeCloseTo(1, 4);
  });

  it('resumes from the checkpointed epoch on a retry, not from 0', async () => {
    const plugin = pretrainStage();
    const stageId = 'train-resume';
    // Attempt 1 runs 1 epoch; its last heartbeat is what Temporal hands to attempt 2.
    const first = makeContext({ store: store.store, stageId });
    const r1 = await plugin.run(first, plugin.paramsSchema.parse({ epochs: 1 }), { dataset });
    const last = first.beats[first.beats.length - 1] as { epoch: number; checkpoint: string };
    expect(last.epoch).toBe(1);
    expect(r1.metrics.resumedFromEpoch).toBe(0);

    const second = makeContext({ store: store.store, stageId, attempt: 2, lastCheckpoint: last });
    const r2 = await plugin.run(second, plugin.paramsSchema.parse({ epochs: 3 }), { dataset });
    expect(r2.metrics.resumedFromEpoch).toBe(1);
    expect(r2.metrics.epochsRun).toBe(2);
    expect(r2.metrics.epoch01TrainLoss).toBeUndefined();
    // Heartbeats carry the last finished checkpoint: epoch 1 (resumed) until epoch 2 is written.
    expect([...new Set(second.beats.map((b) => (b as { epoch: number }).epoch))].filter((e) => e > 1)).toEqual([2, 3]);
    expect(second.beats.every((b) => (b as { epoch: number }).epoch >= 1)).toBe(true);
    // Starting from trained weights, the first resumed epoch already beats a fresh first epoch.
    expect(r2.metrics.epoch02TrainLoss as number).toBeLessThan(r1.metrics.epoch01TrainLoss as number);
    expect(r2.metrics.testAccuracy as number).toBeGreaterThan(0.8);
  });

  it('fails non-retryably, naming the file, when the dataset was tampered with', async () => {
    const prep = dataPrepStage();
    const res = await prep.run(makeContext({ store: store.store, stageId: 'prep-tampered' }), prep.paramsSchema.parse({ limit: 500 }), {});
    const ref = res.outputs.dataset!;
    const xFile = path.join(store.store.resolve(ref), 'train-x.bin');
    const bytes = await readFile(xFile);
    bytes[1234] = (bytes[1234]! + 1) % 256;
    await writeFile(xFile, bytes);

    // Through the dispatch, the input's hash check refuses it before any process starts.
    const err = await dispatch({
      plugin: pretrainStage(),
      store: store.store,
      stageId: 'train-tampered',
      params: { epochs: 1 },
      inputs: { dataset: ref },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'ARTIFACT_CORRUPT', nonRetryable: true });
    expect((err as Error).message).toMatch(/fails its hash check/);

    // With a reference that matches the tampered files, the dataset's own manifest catches it.
    const resealed = { ...ref, sha256: (await hashTree(store.store.resolve(ref))).sha256 };
    const err2 = await dispatch({
      plugin: pretrainStage(),
      store: store.store,
      stageId: 'train-tampered',
      params: { epochs: 1 },
      inputs: { dataset: resealed },
    }).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(ApplicationFailure);
    expect(err2).toMatchObject({ type: 'DATA_CORRUPT', nonRetryable: true });
    expect((err2 as Error).message).toMatch(/train-x\.bin: SHA-256 does not match the manifest/);
  });

  it('rejects a missing dataset input before starting a process', async () => {
    const err = await dispatch({ plugin: pretrainStage(), store: store.store, stageId: 'train-noinput', params: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'INPUT_MISSING', nonRetryable: true });
    expect((err as Error).message).toContain('"dataset"');
  });

  it('kills the child and rejects when the stage is cancelled', async () => {
    const plugin = pretrainStage();
    const ac = new AbortController();
    const ctx = makeContext({ store: store.store, stageId: 'train-cancel', signal: ac.signal });
    const run = plugin.run(ctx, plugin.paramsSchema.parse({ epochs: 50 }), { dataset });
    setTimeout(() => ac.abort(new Error('cancelled by test')), 500);
    await expect(run).rejects.toThrow(/cancelled by test/);
    expect(ctx.beats.length).toBeLessThan(50);
  });
});
