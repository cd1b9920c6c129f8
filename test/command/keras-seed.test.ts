// The seed's own Keras code as a pipeline (pipelines/keras-seed.yaml): core:data-prep → the
// Python stage seed:keras-mlp (stages/keras-seed, TensorFlow 2.21 under MirroredStrategy over two
// logical CPU devices, the capstan_stage SDK) → core:roi-ledger, on the real stack, with a
// SIGKILL of the Python process in the middle of its training.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { BUNDLED_STAGES_DIR } from '../../plugins/builtins.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { StageRegistry } from '../../plugins/registry.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
beforeAll(async () => {
  const bundled = new StageRegistry();
  expect(await loadExternalPlugins(bundled, [BUNDLED_STAGES_DIR], { cwd: process.cwd() })).toContain('seed:keras-mlp@1.0.0');
  stack = await startTestStack({ plugins: [dataPrepStage(), roiLedgerStage(), bundled.get('seed:keras-mlp')!] });
});
afterAll(async () => {
  await stack?.close();
});

/** Pids of the Python processes running the keras-seed script (not its launcher, whose argv names it too). */
function kerasProcesses(): number[] {
  const script = path.join(BUNDLED_STAGES_DIR, 'keras-seed', 'train.py');
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const argv = readFileSync(`/proc/${n}/cmdline`, 'utf8').split('\0');
        return argv.includes(script) && !argv.some((a) => a.endsWith('launcher.mjs'));
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('pipelines/keras-seed.yaml', () => {
  it('completes with a mirrored Keras model, per-epoch curves, and a SIGKILLed attempt resumed from its checkpoint', { timeout: 600_000 }, async () => {
    const spec = YAML.parse(await readFile(path.resolve(import.meta.dirname, '../../pipelines/keras-seed.yaml'), 'utf8'));
    // The same pipeline on 3,000 images and 4 epochs (the full one is `npm start -- --pipeline …`).
    spec.stages[0].params.limit = 3000;
    Object.assign(spec.stages[1].params, { epochs: 4 });
    const started = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, { spec });
    expect(started.errors, JSON.stringify(started.errors)).toBeUndefined();
    const id = started.data.startPipeline.id as string;
    const q = `query($id: ID!) { run(id: $id) { status stages { id status attempts error metrics outputs { kind uri meta } epochs { attempt epoch trainLoss trainAccuracy valLoss valAccuracy } } } }`;
    const read = async () => (await stack.gql(q, { id })).data.run;

    // Kill the Python process once it has checkpointed an epoch.
    await waitFor(async () => (await read()).stages[1].epochs.length >= 1, 'the first Keras epoch', 300_000, 500);
    const pids = kerasProcesses();
    expect(pids.length).toBe(1);
    process.kill(pids[0]!, 'SIGKILL');

    const done = await waitFor(async () => {
      const r = await read();
      return r.status !== 'RUNNING' ? r : undefined;
    }, 'the run to close', 500_000, 1000);
    expect(done.status, JSON.stringify(done.stages[1].error)).toBe('COMPLETED');
    const train = done.stages[1];
    expect(train.attempts).toBe(2);
    expect(train.metrics.resumedFromEpoch).toBeGreaterThanOrEqual(1);
    expect(train.metrics.protocol).toBe(1);
    expect(String(train.metrics.sdk)).toMatch(/^capstan-stage\//);
    // Curves: every epoch of both attempts, with Keras's numbers under the standard names.
    const second = train.epochs.filter((e: any) => e.attempt === 2);
    expect(second.map((e: any) => e.epoch)).toEqual(Array.from({ length: 4 - train.metrics.resumedFromEpoch }, (_, i) => train.metrics.resumedFromEpoch + 1 + i));
    for (const e of train.epochs) for (const k of ['trainLoss', 'trainAccuracy', 'valLoss', 'valAccuracy']) expect(e[k]).toBeTypeOf('number');
    expect(second.at(-1).valAccuracy).toBeGreaterThan(0.8);
    const model = train.outputs.find((o: any) => o.kind === 'model');
    expect(model.meta).toMatchObject({ format: 'keras' });
    expect(existsSync(path.join(stack.artifacts.resolve(model.uri), 'model.keras'))).toBe(true);
    // The ledger booked the Python stage's compute like any other.
    expect(done.stages[2].status).toBe('SUCCEEDED');
    const usage = await stack.db.query<{ attempt: number; cpu_ms: number | string }>(`SELECT attempt, cpu_ms FROM ledger_usage WHERE run_id = ? AND stage_id = 'train' ORDER BY attempt`, [id]);
    expect(usage.map((u) => u.attempt)).toEqual([1, 2]);
    for (const u of usage) expect(Number(u.cpu_ms)).toBeGreaterThan(0);
  });
});
