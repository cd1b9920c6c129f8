import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { devServerPidFile, freePort, startDevServer, type DevServer } from '../../dev/dev-server.js';
import { processInfo, ServerOwnedError } from '../../dev/leftover-server.js';
import { resolveWeed, startSeaweed, type Seaweed } from '../../dev/seaweed.js';
import { silentLogger, type Logger } from '../../lib/logger.js';

// `npm start` killed with SIGKILL (its process group: an OOM kill, a closed terminal) leaves its
// Temporal server and SeaweedFS running in their own groups, on the data folder's database and
// ports. The next start on that folder stops them and says so; anything else on a port is refused.

const root = path.resolve(import.meta.dirname, '../..');
const FIXTURE = fileURLToPath(new URL('./fixtures/leftover-server.ts', import.meta.url));
/** Every pid a test started or found, killed (with its group) whatever happens. */
const pids = new Set<number>();
const servers: (DevServer | Seaweed)[] = [];
afterAll(async () => {
  for (const s of servers) await s.stop();
  for (const pid of pids) {
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const put = (m: string) => void lines.push(m);
  return { lines, debug: put, info: put, warn: put, error: put };
}

async function until<T>(what: string, ms: number, probe: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a server for a data folder from a stack-like process, then SIGKILLs that process's group; returns the server's pid. */
async function crashedStack(args: Record<string, unknown>): Promise<number> {
  const stack = spawn(process.execPath, ['--import', 'tsx', FIXTURE, JSON.stringify(args)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  pids.add(stack.pid!);
  let out = '';
  stack.stdout!.on('data', (d) => (out += d));
  stack.stderr!.on('data', (d) => (out += d));
  const pid = await until('the stack to start its server', 120_000, () => {
    if (stack.exitCode !== null) throw new Error(`the stack exited early:\n${out}`);
    const m = /ready (\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  });
  pids.add(pid);
  await new Promise<void>((resolve) => {
    stack.once('exit', () => resolve());
    process.kill(-stack.pid!, 'SIGKILL');
  });
  // The crash left the server running, no longer a child of any stack.
  await until('the server to outlive its stack', 10_000, () => processInfo(pid) && processInfo(pid)!.ppid !== stack.pid);
  return pid;
}

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

describe('a server that an earlier stack left on the data folder', () => {
  it('a Temporal dev server left by a killed stack is stopped, said so, and a fresh one starts on the same database and port', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-leftover-'));
    const dbFile = path.join(dir, 'temporal', 'dev.db');
    const port = await freePort();
    const cliPath = inject('temporalCliPath');
    const old = await crashedStack({ kind: 'temporal', cliPath, dbFile, port });
    expect(await canConnect(port)).toBe(true);
    expect(JSON.parse(readFileSync(devServerPidFile(dbFile), 'utf8'))).toMatchObject({ pid: old, binary: cliPath, ports: { port } });

    const logger = recordingLogger();
    const server = await startDevServer({ cliPath, dbFile, port, logger });
    servers.push(server);
    pids.add(server.process.pid!);
    expect(logger.lines.join('\n')).toContain(`stopped a Temporal dev server (pid ${old}) that an earlier stack left on ${path.dirname(dbFile)}`);
    expect(processInfo(old)).toBeUndefined();
    expect(server.process.pid).not.toBe(old);
    expect(JSON.parse(readFileSync(devServerPidFile(dbFile), 'utf8')).pid).toBe(server.process.pid);
    expect(await canConnect(port)).toBe(true);

    // A clean stop takes the pid file with it.
    await server.stop();
    expect(existsSync(devServerPidFile(dbFile))).toBe(false);
  });

  it('a port held by anything the pid file does not name is still refused', async () => {
    const squatter = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => squatter.once('listening', r));
    const port = (squatter.address() as net.AddressInfo).port;
    try {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-leftover-'));
      const dbFile = path.join(dir, 'temporal', 'dev.db');
      // A pid file naming this very process (alive, but no Temporal server) changes nothing.
      mkdirSync(path.dirname(dbFile), { recursive: true });
      writeFileSync(
        devServerPidFile(dbFile),
        JSON.stringify({
          pid: process.pid,
          binary: inject('temporalCliPath'),
          dataArg: `--db-filename ${dbFile}`,
          ports: { port },
          ownerPid: 1,
          startedAt: new Date().toISOString(),
        }),
      );
      await expect(startDevServer({ cliPath: inject('temporalCliPath'), dbFile, port, logger: silentLogger })).rejects.toThrow(
        `the Temporal port 127.0.0.1:${port} is already in use by another process`,
      );
      expect(await canConnect(port)).toBe(true);
    } finally {
      squatter.close();
    }
  });

  it('a stale pid file naming a dead or an unrelated process is removed and nothing is killed', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-leftover-'));
    const dbFile = path.join(dir, 'temporal', 'dev.db');
    mkdirSync(path.dirname(dbFile), { recursive: true });
    const cliPath = inject('temporalCliPath');
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    const unrelated = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    pids.add(unrelated.pid!);
    const record = (pid: number) =>
      JSON.stringify({ pid, binary: cliPath, dataArg: `--db-filename ${dbFile}`, ports: {}, ownerPid: 1, startedAt: new Date().toISOString() });
    // A dead pid, this test's own pid, an unrelated live process, and the bare pid an older stack wrote.
    for (const [content, pid, reason] of [
      [record(dead), dead, 'is not running'],
      [record(process.pid), process.pid, 'is not a Temporal dev server'],
      [record(unrelated.pid!), unrelated.pid!, 'is not a Temporal dev server'],
      [String(unrelated.pid), unrelated.pid!, 'is not a Temporal dev server'],
    ] as const) {
      writeFileSync(devServerPidFile(dbFile), content);
      const logger = recordingLogger();
      const server = await startDevServer({ cliPath, dbFile, logger });
      pids.add(server.process.pid!);
      const said = logger.lines.join('\n');
      expect(said).toContain(`removed a stale pid file ${devServerPidFile(dbFile)}: pid ${pid} ${reason}`);
      expect(said).not.toContain('stopped a');
      await server.stop();
    }
    expect(processInfo(process.pid)).toBeDefined();
    expect(processInfo(unrelated.pid!)).toBeDefined();
    expect(unrelated.exitCode).toBeNull();
    unrelated.kill('SIGKILL');
  });

  it('a server whose stack is still running is not taken for a leftover', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-leftover-'));
    const dbFile = path.join(dir, 'temporal', 'dev.db');
    const cliPath = inject('temporalCliPath');
    const first = await startDevServer({ cliPath, dbFile, logger: silentLogger });
    servers.push(first);
    pids.add(first.process.pid!);
    const second = startDevServer({ cliPath, dbFile, logger: silentLogger }).then((s) => {
      servers.push(s);
      pids.add(s.process.pid!);
      return s;
    });
    await expect(second).rejects.toBeInstanceOf(ServerOwnedError);
    await expect(second).rejects.toThrow(`a Temporal dev server (pid ${first.process.pid}) of a stack that is still running (pid ${process.pid})`);
    expect(processInfo(first.process.pid!)).toBeDefined();
    await first.stop();
  });

  it('a SeaweedFS server left by a killed stack is stopped, said so, and a fresh one serves the same folder', async () => {
    const weedPath = resolveWeed({ toolsDir: path.join(root, '.tools'), env: process.env, logger: silentLogger }).path;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-leftover-weed-'));
    const old = await crashedStack({ kind: 'seaweed', weedPath, dir });
    expect(JSON.parse(readFileSync(path.join(dir, 'weed.pid'), 'utf8'))).toMatchObject({ pid: old, binary: weedPath });

    const logger = recordingLogger();
    const weed = await startSeaweed({ weedPath, dir, logger });
    servers.push(weed);
    pids.add(weed.process.pid!);
    expect(logger.lines.join('\n')).toContain(`stopped a SeaweedFS server (pid ${old}) that an earlier stack left on ${dir}`);
    expect(processInfo(old)).toBeUndefined();
    expect((await fetch(weed.endpoint)).status).toBeLessThan(500);
    await weed.stop();
    expect(existsSync(path.join(dir, 'weed.pid'))).toBe(false);
  });
});
