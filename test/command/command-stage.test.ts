// Stages in any language (docs/stage-protocol.md): a Python program that speaks the stage
// protocol by hand (test/fixtures/command-stages/trainer, no SDK), declared by a manifest and
// loaded like any plugin, run by the real worker on the real Temporal dev server.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAUNCHER } from '../../plugins/command/run-process.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { StageRegistry } from '../../plugins/registry.js';
import { writeNoteStage } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const fixture = path.resolve(import.meta.dirname, '../fixtures/command-stages/trainer');
let stack: TestStack;
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-command-'));
  const stages = new StageRegistry();
  expect(await loadExternalPlugins(stages, [fixture], { cwd: process.cwd() })).toEqual(['test:py-trainer@1.0.0']);
  stack = await startTestStack({ plugins: [writeNoteStage, stages.get('test:py-trainer')!] });
});
afterAll(async () => {
  await stack?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const RUN = `id status stages { id status attempts error errorType metrics outputs { kind uri meta } epochs { attempt epoch trainLoss valAccuracy } }`;

async function start(name: string, trainer: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, {
    spec: {
      name,
      onFailure: { action: 'pause' },
      stages: [
        { id: 'note', plugin: 'test:write-note', params: { text: 'keras on capstan' } },
        { id: 'train', plugin: 'test:py-trainer', params: trainer, ...extra },
      ],
    },
  });
  expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
  return r.data.startPipeline.id;
}

async function run(id: string) {
  const r = await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id });
  return r.data.run;
}

const until = (id: string, ok: (r: any) => boolean, what: string, ms = 120_000) =>
  waitFor(
    async () => {
      const r = await run(id);
      return r && ok(r) ? r : undefined;
    },
    what,
    ms,
  );

/** Whether a process still runs (a zombie waiting to be reaped has stopped running). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('a Python stage through the stage protocol', () => {
  it('is listed with its manifest JSON Schema and refuses bad params before anything starts', async () => {
    const listed = await stack.gql(`{ stagePlugins { name version consumes produces resource paramsSchema } }`);
    const p = listed.data.stagePlugins.find((x: any) => x.name === 'test:py-trainer');
    expect(p).toMatchObject({ version: '1.0.0', consumes: ['note'], produces: ['model'], resource: 'cpu' });
    expect(p.paramsSchema.properties.mode.enum).toContain('raise');
    const bad = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, {
      spec: {
        name: 'py-bad-params',
        stages: [
          { id: 'note', plugin: 'test:write-note' },
          { id: 'train', plugin: 'test:py-trainer', params: { epochs: 0, colour: 'red' } },
        ],
      },
    });
    expect(bad.errors?.[0]?.extensions?.code).toBe('SPEC_INVALID');
    const paths = bad.errors![0]!.extensions.issues.map((i: any) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['stages[1].params.epochs']));
    const runs = await stack.gql(`{ runs(first: 50) { nodes { pipeline } } }`);
    expect(JSON.stringify(runs.data ?? {})).not.toContain('py-bad-params');
  });

  it('completes: epochs become curves, outputs are sealed with their meta, metrics merged, no worker secrets in its environment', async () => {
    process.env.CAPSTAN_TEST_SECRET = 'must-not-reach-the-stage';
    const id = await start('py-ok', { epochs: 3, epochMs: 20 });
    const done = await until(id, (r) => r.status !== 'RUNNING', 'the run to close');
    expect(done.status).toBe('COMPLETED');
    const train = done.stages[1];
    expect(train).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(train.metrics).toMatchObject({
      resumedFromEpoch: 0,
      finalEpoch: 3,
      protocol: 1,
      sdk: 'hand-written/1',
      device: 'none',
      envFlag: 'from-manifest',
      workerEnvSeen: false,
    });
    delete process.env.CAPSTAN_TEST_SECRET;
    expect(train.metrics.processCpuSeconds).toBeGreaterThan(0);
    expect(train.epochs.map((e: any) => [e.epoch, e.trainLoss])).toEqual([
      [1, 1],
      [2, 0.5],
      [3, 1 / 3],
    ]);
    const model = train.outputs[0];
    expect(model).toMatchObject({ kind: 'model', meta: { format: 'test', epochs: 3 } });
    expect(await readFile(path.join(stack.artifacts.resolve(model.uri), 'weights.txt'), 'utf8')).toBe('KERAS ON CAPSTAN');
  });

  it('a script that raises: the error names the exception and its last stderr lines, and is retried', async () => {
    const id = await start('py-raise', { mode: 'raise' });
    const paused = await until(id, (r) => r.status === 'PAUSED', 'the run to pause');
    const train = paused.stages[1];
    expect(train.attempts).toBe(3);
    expect(train.errorType).toBe('STAGE_PROCESS_FAILED');
    expect(train.error).toMatch(/exited with code 1/);
    expect(train.error).toContain('ValueError: the labels do not match the images');
    expect(train.error).toContain('about to fail on purpose');
    await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "test") { id } }`, { id });
  });

  it('a typed badInput error is not retried; a wrong protocol version and a non-JSON message fail clearly; exit 0 without the output is refused', async () => {
    const cases: [string, string, RegExp][] = [
      ['bad-input', 'BAD_LABELS', /BAD_LABELS: label 11 is out of range/],
      ['wrong-protocol', 'STAGE_PROTOCOL_VERSION', /speaks stage protocol 99 \(hand-written\/1\), but this worker speaks protocol 1/],
      ['not-json', 'STAGE_PROTOCOL_ERROR', /not JSON/],
      ['no-output', 'STAGE_OUTPUT_MISSING', /exited 0 without declaring its output "model"/],
    ];
    const ids = await Promise.all(cases.map(([mode]) => start(`py-${mode}`, { mode })));
    for (const [i, id] of ids.entries()) {
      const [, type, message] = cases[i]!;
      const paused = await until(id, (r) => r.status === 'PAUSED', `${cases[i]![0]} to pause`);
      expect(paused.stages[1]).toMatchObject({ attempts: 1, errorType: type });
      expect(paused.stages[1].error).toMatch(message);
      await stack.gql(`mutation($id: ID!) { abortRun(runId: $id, reason: "test") { id } }`, { id });
    }
  });

  it('SIGKILL of the process mid-training: the retry resumes from its last checkpoint', async () => {
    const pidFile = path.join(tmp, 'kill.pid');
    const id = await start('py-kill', { epochs: 6, epochMs: 700, pidFile });
    await until(id, (r) => r.stages[1].epochs.length >= 2, 'two epochs', 60_000);
    const pid = Number(await readFile(pidFile, 'utf8'));
    process.kill(pid, 'SIGKILL');
    const done = await until(id, (r) => r.status !== 'RUNNING', 'the run to close');
    expect(done.status).toBe('COMPLETED');
    expect(done.stages[1].attempts).toBe(2);
    expect(done.stages[1].metrics.resumedFromEpoch).toBeGreaterThanOrEqual(1); // epoch n is reported, then its checkpoint
    // Each epoch of the retry came once more, from the resumed one on.
    const second = done.stages[1].epochs.filter((e: any) => e.attempt === 2).map((e: any) => e.epoch);
    expect(second[0]).toBe(done.stages[1].metrics.resumedFromEpoch + 1);
    expect(second.at(-1)).toBe(6);
  });

  it('cancelRun mid-training: the process group (a helper process too) is gone within the grace period, even when SIGTERM is ignored', async () => {
    const pidFile = path.join(tmp, 'cancel.pid');
    const id = await start('py-cancel', { epochs: 100, epochMs: 500, helper: true, mode: 'ignore-term', pidFile });
    await until(id, (r) => r.stages[1].epochs.length >= 1, 'an epoch', 60_000);
    const pid = Number(await readFile(pidFile, 'utf8'));
    const helpers = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).map(Number);
    expect(helpers.length).toBe(1);
    expect(alive(pid) && alive(helpers[0]!)).toBe(true);
    const asked = Date.now();
    const cancelled = await stack.gql(`mutation($id: ID!) { cancelRun(runId: $id) { id } }`, { id });
    expect(cancelled.errors, JSON.stringify(cancelled.errors)).toBeUndefined();
    // The cancellation reaches the stage with a heartbeat (at most 0.8 × the manifest's 5 s), then
    // SIGTERM, ignored, then SIGKILL after the manifest's 2 s grace.
    await waitFor(async () => !alive(pid) && !alive(helpers[0]!), 'the process group to be gone', 20_000, 100);
    console.log(`python stage: process group gone ${Date.now() - asked} ms after cancelRun`);
    const closed = await until(id, (r) => r.status !== 'RUNNING', 'the run to close');
    expect(closed.status).toBe('CANCELLED');
  });

  it('books the CPU seconds of the whole process tree, within 10 % of what /proc says it used', async () => {
    const reportFile = path.join(tmp, 'cpu.json');
    const id = await start('py-cpu', { epochs: 3, epochMs: 1500, busy: true, helper: true, reportFile });
    const done = await until(id, (r) => r.status !== 'RUNNING', 'the run to close');
    expect(done.status).toBe('COMPLETED');
    const measured = JSON.parse(await readFile(reportFile, 'utf8')).cpuSeconds as number;
    // The script and its helper each burn 4.5 s of CPU time: a tree of two processes.
    expect(measured).toBeGreaterThan(8.5); // os.times() counts in 10 ms ticks: 9.00 is common
    const row = await waitFor(async () => {
      const rows = await stack.db.query<{ cpu_ms: string | number }>(
        `SELECT cpu_ms FROM ledger_usage WHERE run_id = ? AND stage_id = 'train' AND partial = 0`,
        [id],
      );
      return rows[0];
    }, 'the usage row');
    const booked = Number(row.cpu_ms) / 1000;
    console.log(
      `python stage: booked ${booked.toFixed(3)} CPU s, the process tree used ${measured.toFixed(3)} s by /proc (${((booked / measured - 1) * 100).toFixed(1)} %)`,
    );
    expect(Math.abs(booked / measured - 1)).toBeLessThan(0.1);
    expect(done.stages[1].metrics.processCpuSeconds).toBeGreaterThan(measured * 0.9);
  });

  it('a stage budget below its cost stops it at a checkpoint; raiseBudget resumes it from there', async () => {
    // 0.000015 USD is about 1.3 CPU seconds at the price sheet's 0.0425 USD per CPU hour: crossed in the second busy epoch.
    const id = await start('py-budget', { epochs: 5, epochMs: 800, busy: true }, { budget: { max: '0.000015' } });
    const paused = await until(id, (r) => r.status === 'PAUSED', 'the stage to stop on its budget');
    const train = paused.stages[1];
    expect(train.errorType).toBe('BUDGET_EXCEEDED');
    expect(train.error).toMatch(/stopped at a checkpoint: stage train has spent [\d.]+ USD, over its budget of 0\.000015 USD/);
    const raised = await stack.gql(`mutation($id: ID!) { raiseBudget(runId: $id, max: "1.00", stageId: "train") { id } }`, { id });
    expect(raised.errors, JSON.stringify(raised.errors)).toBeUndefined();
    const done = await until(id, (r) => r.status !== 'RUNNING' && r.status !== 'PAUSED', 'the raised run to close');
    expect(done.status).toBe('COMPLETED');
    expect(done.stages[1].metrics.resumedFromEpoch).toBeGreaterThanOrEqual(1);
    expect(done.stages[1].metrics.resumedFromEpoch).toBeLessThan(5);
  });

  it('the launcher stops the process group when its worker is gone (its stdin pipe closes)', async () => {
    const pidFile = path.join(tmp, 'orphan.pid');
    const launcher = spawn(
      process.execPath,
      [LAUNCHER, 'python3', '-c', `import os, time\nopen(${JSON.stringify(pidFile)}, 'w').write(str(os.getpid()))\ntime.sleep(120)`],
      {
        stdio: ['pipe', 'ignore', 'ignore', 'pipe', 'pipe'],
        detached: true,
        env: { PATH: process.env.PATH!, CAPSTAN_STOP_GRACE_MS: '1000' },
      },
    );
    const pid = await waitFor(async () => (existsSync(pidFile) ? Number(await readFile(pidFile, 'utf8')) : undefined), 'the process to start', 20_000, 50);
    expect(alive(pid)).toBe(true);
    launcher.stdin!.destroy(); // what the worker's death does to the pipe
    await waitFor(async () => !alive(pid), 'the process to be stopped', 10_000, 50);
    await waitFor(async () => launcher.exitCode !== null || launcher.signalCode !== null, 'the launcher to end', 10_000, 50);
  });
});
