import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../dev/dev-server.js';

// The stall of issue 21, as a user meets it: `npm start` is killed (SIGKILL of its process group)
// while a data-parallel fit runs, `npm start` runs again on the same data folder, and a 3-replica
// fit is started on a gpu queue of 2 slots (cpu:2). The keeper must not count the dead worker's
// slots: the fit is refused with the capacity reason, or pauses saying why, or completes — within
// a bounded time, never holding slots no worker has — and the run in flight before the crash completes.

const root = path.resolve(import.meta.dirname, '../..');
const stacks: ChildProcess[] = [];
let dataDir: string | undefined;
afterAll(() => {
  for (const s of stacks) {
    try {
      if (s.pid && s.exitCode === null && s.signalCode === null) process.kill(-s.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  // The Temporal server lives in a group of its own (it outlives a killed stack by design).
  try {
    if (dataDir) process.kill((JSON.parse(readFileSync(path.join(dataDir, 'temporal', 'dev.pid'), 'utf8')) as { pid: number }).pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
});

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined | false> | T | undefined | false, everyMs = 500): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    // A probe that throws ends the wait: it saw something that must not happen.
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** `npm start -- --no-run` as real processes on the shared data folder; resolves once the banner is printed. */
async function startStack(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/dev-stack.ts', '--no-run'], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  stacks.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  await until('the stack to come up', 240_000, () => {
    if (child.exitCode !== null) throw new Error(`npm start exited early:\n${out}`);
    return out.includes('Capstan is up');
  });
  return { child, output: () => out };
}

async function killGroup(child: ChildProcess): Promise<void> {
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    process.kill(-child.pid!, 'SIGKILL');
  });
}

const fitSpec = (name: string, replicas: number, epochs: number) => ({
  name,
  stages: [
    { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 1500, seed: 7 } },
    { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 1 } },
    { id: 'fit', plugin: 'core:multi-device-fit', params: { replicas, epochs, syncEverySteps: 10 }, timeouts: { heartbeat: '15s' } },
  ],
});

describe('npm start killed during a data-parallel fit, then started again on the same folder', () => {
  it('refuses (or pauses with the reason, or completes) a 3-replica fit on 2 slots within a bounded time; the fit in flight before the crash completes', {
    timeout: 900_000,
  }, async () => {
    const [temporalPort, uiPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-restart-stall-'));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TEMPORAL_PORT: String(temporalPort),
      TEMPORAL_UI_PORT: String(uiPort),
      CAPSTAN_API_PORT: String(apiPort),
      CAPSTAN_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS: '',
      CAPSTAN_GPUS: 'cpu:2',
      // A long lease: a dead worker's report would still count while the 3-replica fit asks (the stall).
      CAPSTAN_SLOT_LEASE: '180s',
      CAPSTAN_SLOT_REVOKE_AFTER: '10s',
      CAPSTAN_GANG_START_TIMEOUT: '60s',
      CAPSTAN_GANG_REQUEUES: '1',
    };
    const api = `http://127.0.0.1:${apiPort}/graphql`;
    const gql = async (query: string, variables?: unknown) => {
      const token = readFileSync(path.join(dataDir!, 'admin-token'), 'utf8').trim();
      const r = await fetch(api, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await r.json()) as any;
    };
    const RUN = `query($id: ID!) { run(id: $id) { status stages { id status attempts error errorType progress } events { type stageId message } } }`;
    const run = async (id: string) => (await gql(RUN, { id })).data?.run;

    // 1. A stack with a 2-replica fit running.
    const first = await startStack(env);
    const started = await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: fitSpec('inflight', 2, 6) });
    expect(started.errors, first.output()).toBeUndefined();
    const inflight = started.data.startPipeline.id as string;
    // Mid-fit: its replicas hold the gang's slots and have heartbeated (not merely asked for slots).
    const before = await until(
      'the fit’s replicas to be training',
      300_000,
      async () => {
        const r = await run(inflight);
        if (r && !['RUNNING'].includes(r.status)) throw new Error(`run is ${r.status}: ${JSON.stringify(r.stages)}`);
        const fit = r?.stages.find((s: any) => s.id === 'fit');
        return fit?.status === 'RUNNING' && fit.progress ? fit : undefined;
      },
      250,
    );
    console.log(`[restart-stall] killing the stack mid-fit: ${JSON.stringify(before.progress)}`);

    // 2. Killed like an OOM kill or a closed terminal, then started again on the same folder.
    await killGroup(first.child);
    const second = await startStack(env);
    expect(second.output()).toContain('stopped a Temporal dev server');
    // The new worker found the killed one's record on the folder and withdrew its slot reports.
    await until('the new worker to withdraw the dead worker’s slot reports', 120_000, () =>
      /withdrew the slot reports of a worker that is gone \(pid \d+/.test(second.output()),
    );

    // 3. A 3-replica fit on 2 live slots: refused at once, or (if it got in) it must end or pause saying why.
    const t0 = Date.now();
    const big = await gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: fitSpec('bar-gang3', 3, 1) });
    if (big.errors) {
      expect(big.errors[0].extensions.code).toBe('SPEC_INVALID');
      expect(big.errors[0].extensions.issues).toEqual([
        expect.objectContaining({ code: 'GANG_CAPACITY', message: expect.stringContaining('3 replicas need 3 slots at once') }),
      ]);
      expect(big.errors[0].extensions.issues[0].message).toMatch(/has 2$/);
    } else {
      const id = big.data.startPipeline.id as string;
      const closed = await until('the 3-replica fit to complete or pause saying why', 300_000, async () => {
        const r = await run(id);
        return r && r.status !== 'RUNNING' ? r : undefined;
      });
      const fit = closed.stages.find((s: any) => s.id === 'fit');
      if (closed.status === 'PAUSED') expect(['GANG_CAPACITY', 'GANG_STALLED']).toContain(fit.errorType);
      else expect(closed.status, JSON.stringify(closed.stages)).toBe('COMPLETED');
      console.log(
        `[restart-stall] the 3-replica fit got in and ended ${closed.status} ${fit.errorType ?? ''} after ${Math.round((Date.now() - t0) / 1000)} s: ${fit.error ?? ''}`,
      );
    }

    // 4. The fit that was running when the stack was killed completes on the new stack.
    const done = await until(
      'the in-flight run to complete',
      400_000,
      async () => {
        const r = await run(inflight);
        if (r && ['FAILED', 'CANCELLED', 'PAUSED'].includes(r.status)) throw new Error(`in-flight run is ${r.status}: ${JSON.stringify(r.stages)}`);
        return r?.status === 'COMPLETED' ? r : undefined;
      },
      1000,
    );
    expect(done.stages.map((s: any) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
    console.log(
      `[restart-stall] in-flight run completed; events: ${done.events
        .filter((e: any) => e.stageId === 'fit')
        .map((e: any) => e.type)
        .join(', ')}`,
    );
  });
});
