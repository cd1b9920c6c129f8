import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChildJobError, PROTOCOL_PREFIX, runChildJob } from '../../ml/training/child-runner.js';
import { tmpStore } from './helpers.js';

let store: Awaited<ReturnType<typeof tmpStore>>;
beforeAll(async () => {
  store = await tmpStore();
});
afterAll(async () => {
  await store.cleanup();
});

async function script(name: string, body: string): Promise<string> {
  const file = path.join(store.root, name);
  await writeFile(file, `const P = ${JSON.stringify(PROTOCOL_PREFIX)};\nconst job = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));\n${body}`);
  return file;
}

describe('runChildJob', () => {
  it('forwards progress lines, ignores other stdout, and returns the result with its CPU time', async () => {
    const s = await script(
      'ok.cjs',
      `console.log('tfjs says hi');
       for (let i = 1; i <= 3; i++) console.log(P + JSON.stringify({ type: 'progress', data: { step: i * job.k } }));
       console.log(P + JSON.stringify({ type: 'alive' }));
       console.log(P + JSON.stringify({ type: 'result', data: { done: true }, cpuSeconds: 0.5 }));`,
    );
    const seen: unknown[] = [];
    const out = await runChildJob<{ done: boolean }>({
      script: s,
      job: { k: 10 },
      jobFile: path.join(store.root, 'jobs', 'a.json'),
      onProgress: (d) => seen.push(d),
      onAlive: () => seen.push('alive'),
    });
    expect(seen).toEqual([{ step: 10 }, { step: 20 }, { step: 30 }, 'alive']);
    expect(out.result).toEqual({ done: true });
    expect(out.cpuSeconds).toBe(0.5);
  });

  it('turns a reported error into a typed ChildJobError and a crash into a retryable CHILD_CRASHED', async () => {
    const bad = await script(
      'bad.cjs',
      `console.log(P + JSON.stringify({ type: 'error', message: 'f.idx: truncated', code: 'DATA_CORRUPT', retryable: false, file: 'f.idx' })); process.exit(1);`,
    );
    const e1 = await runChildJob({ script: bad, job: {}, jobFile: path.join(store.root, 'b.json') }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(ChildJobError);
    expect(e1).toMatchObject({ code: 'DATA_CORRUPT', retryable: false, file: 'f.idx' });

    const crash = await script('crash.cjs', `console.error('segfault-ish'); process.exit(3);`);
    const e2 = await runChildJob({ script: crash, job: {}, jobFile: path.join(store.root, 'c.json') }).catch((e: unknown) => e);
    expect(e2).toMatchObject({ code: 'CHILD_CRASHED', retryable: true });
    expect((e2 as Error).message).toMatch(/exited with code 3[\s\S]*segfault-ish/);
  });

  it('kills the child when the signal aborts', async () => {
    const hang = await script('hang.cjs', `console.log(P + JSON.stringify({ type: 'progress', data: 'started' })); setInterval(() => {}, 1000);`);
    const ac = new AbortController();
    const run = runChildJob({
      script: hang,
      job: {},
      jobFile: path.join(store.root, 'd.json'),
      signal: ac.signal,
      onProgress: () => ac.abort(new Error('cancelled')),
    });
    await expect(run).rejects.toThrow('cancelled');
  });
});
