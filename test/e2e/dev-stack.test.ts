import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../dev/dev-server.js';

const root = path.resolve(import.meta.dirname, '../..');
let child: ChildProcess | undefined;
let serverPidFile: string | undefined;
afterAll(() => {
  // Whatever is left of the stack (its own process group, and the Temporal server in its own) goes.
  if (child?.pid && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
  try {
    if (serverPidFile) process.kill((JSON.parse(readFileSync(serverPidFile, 'utf8')) as { pid: number }).pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
});

/** The README's first command, as real processes: dev server + UI, worker, API, a pipeline on real MNIST. */
describe('npm start (the embedded stack)', () => {
  it('brings up Temporal, worker and API, runs an MNIST pipeline end to end, serves predictions, and stops cleanly on SIGINT', {
    timeout: 600_000,
  }, async () => {
    const [temporalPort, uiPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-e2e-'));
    serverPidFile = path.join(dataDir, 'temporal', 'dev.pid');
    // What `npm start` runs (package.json "start"), without npm in between so signals reach it directly.
    child = spawn(process.execPath, ['--import', 'tsx', 'scripts/dev-stack.ts', '--pipeline', 'pipelines/mnist-small.yaml'], {
      cwd: root,
      env: {
        ...process.env,
        TEMPORAL_PORT: String(temporalPort),
        TEMPORAL_UI_PORT: String(uiPort),
        CAPSTAN_API_PORT: String(apiPort),
        CAPSTAN_DATA_DIR: dataDir,
        TEMPORAL_ADDRESS: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const closed = await new Promise<string>((resolve, reject) => {
      const t = setInterval(() => {
        const m = /run (pipeline\/mnist-small\/\w+): (\w+)/.exec(out);
        if (m) {
          clearInterval(t);
          resolve(`${m[1]} ${m[2]}`);
        }
        if (child!.exitCode !== null) {
          clearInterval(t);
          reject(new Error(`npm start exited early:\n${out}`));
        }
      }, 250);
    });
    const [runId, status] = closed.split(' ');
    expect(status, out).toBe('COMPLETED');
    expect(out).toContain(`GraphQL API + GraphiQL  http://127.0.0.1:${apiPort}/graphql`);
    expect(out).toContain(`Temporal Web UI         http://localhost:${uiPort}`);

    const api = `http://127.0.0.1:${apiPort}`;
    // The first start made an admin token in the data dir, readable by its owner only, and said where.
    const tokenFile = path.join(dataDir, 'admin-token');
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(out).toContain('Admin token');
    const token = readFileSync(tokenFile, 'utf8').trim();
    expect(token).toMatch(/^cap_[0-9a-f]{12}_[\w-]{43}$/);
    expect(out).not.toContain(token);
    const auth = { authorization: `Bearer ${token}` };
    expect(
      (await fetch(`${api}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ whoami { role } }"}' })).status,
    ).toBe(401);
    const gql = async (query: string, variables?: unknown) =>
      (await (
        await fetch(`${api}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ query, variables }) })
      ).json()) as any;
    expect((await gql('{ whoami { name role } }')).data.whoami).toEqual({ name: 'dev-admin', role: 'ADMIN' });
    const r = await gql(`query($id: ID!) { run(id: $id) { status tfBackend stages { id status metrics } roi { cost revenue roi } } }`, { id: runId });
    expect(r.errors).toBeUndefined();
    const run = r.data.run;
    expect(run.tfBackend).toMatch(/^(node-gpu|node|wasm|cpu)$/);
    expect(run.stages.map((s: any) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
    expect(run.stages[1].metrics.testAccuracy).toBeGreaterThan(0.5);
    expect(run.roi.revenue).toBe('100.00');
    expect(Number(run.roi.cost)).toBeGreaterThan(0);
    // ROI = (R − C) / C, from the exact decimal strings.
    expect(Number(run.roi.roi)).toBeCloseTo((100 - Number(run.roi.cost)) / Number(run.roi.cost), 3);

    // The deployed model answers over plain HTTP (the API's model server picks up `production`).
    const pixels = Array.from({ length: 784 }, (_, i) => ((i * 7) % 255) / 255);
    const pred = await (async () => {
      for (let i = 0; i < 40; i++) {
        const res = await fetch(`${api}/models/mnist-small/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...auth },
          body: JSON.stringify({ inputs: [pixels] }),
        });
        if (res.status === 200) return (await res.json()) as any;
        await new Promise((res2) => setTimeout(res2, 500));
      }
      throw new Error('model never served');
    })();
    expect(pred.model).toBe('mnist-small');
    expect(pred.predictions[0].probabilities).toHaveLength(10);
    // The label is the most probable class (argmax of the probabilities the server returned).
    const probs = pred.predictions[0].probabilities as number[];
    expect(pred.predictions[0].label).toBe(probs.indexOf(Math.max(...probs)));

    // Ctrl-C stops everything and the process exits 0.
    const { pid } = JSON.parse(readFileSync(serverPidFile, 'utf8')) as { pid: number };
    const code = await new Promise<number | null>((resolve) => {
      child!.once('exit', (c) => resolve(c));
      child!.kill('SIGINT');
    });
    expect(code).toBe(0);
    await expect(fetch(`${api}/graphql`)).rejects.toThrow();
    // The Temporal server went last, and is gone too, with its pid file.
    expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(serverPidFile)).toBe(false);
  });

  it('refuses to start when a port it needs is taken, naming the port and the variable, and starts nothing', { timeout: 120_000 }, async () => {
    const [apiPort, uiPort] = [await freePort(), await freePort()];
    const squatter = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => squatter.once('listening', r));
    const taken = (squatter.address() as net.AddressInfo).port;
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'capstan-e2e-ports-'));
    try {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/dev-stack.ts', '--no-run'], {
        cwd: root,
        env: {
          ...process.env,
          TEMPORAL_PORT: String(taken),
          TEMPORAL_UI_PORT: String(uiPort),
          CAPSTAN_API_PORT: String(apiPort),
          CAPSTAN_DATA_DIR: dataDir,
          TEMPORAL_ADDRESS: '',
        },
        encoding: 'utf8',
        timeout: 90_000,
      });
      const out = `${r.stdout}${r.stderr}`;
      expect(r.status, out).toBe(2);
      expect(out).toContain(`port ${taken} (TEMPORAL_PORT) is already in use`);
      expect(out).toContain(`TEMPORAL_ADDRESS=127.0.0.1:${taken}`);
      expect(out).not.toContain('Capstan is up');
      // Nothing was started: no API, no Temporal server of ours.
      await expect(fetch(`http://127.0.0.1:${apiPort}/healthz`)).rejects.toThrow();
      expect(existsSync(path.join(dataDir, 'temporal', 'dev.pid'))).toBe(false);
    } finally {
      squatter.close();
    }
  });
});
