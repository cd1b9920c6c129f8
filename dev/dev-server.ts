import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { allSearchAttributes } from '../workflows/search-attributes.js';
import type { Logger } from '../lib/logger.js';
import { removeServerPidFile, stopLeftoverServer, writeServerPidFile, type LeftoverOutcome } from './leftover-server.js';
import { freeLocalPort } from '../lib/telemetry/metrics.js';

export interface DevServer {
  address: string;
  namespace: string;
  uiUrl?: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  cliPath: string;
  /** SQLite file for persistence; the server keeps history across restarts. */
  dbFile: string;
  ip?: string;
  port?: number;
  /** Omit for a headless server. */
  uiPort?: number;
  namespace?: string;
  /** Where the server's output goes (a file is kept next to the database by default). */
  logFile?: string;
  logger: Logger;
  startTimeoutMs?: number;
}

/** Where a dev server on this database file keeps its pid file (next to it: `dev.db` → `dev.pid`). */
export function devServerPidFile(dbFile: string): string {
  return `${dbFile.replace(/\.db$/, '')}.pid`;
}

/**
 * Stops a dev server that an earlier stack left running on this database file (its pid file says
 * which); see stopLeftoverServer. startDevServer does this first; `npm start` calls it before it
 * checks its ports, as such a server still holds them.
 */
export function stopLeftoverDevServer(o: { dbFile: string; logger: Logger }): Promise<LeftoverOutcome> {
  return stopLeftoverServer({
    pidFile: devServerPidFile(o.dbFile),
    what: 'Temporal dev server',
    where: path.dirname(o.dbFile),
    dataArg: `--db-filename ${o.dbFile}`,
    logger: o.logger,
  });
}

/**
 * Starts `temporal server start-dev` with Capstan's search attributes and waits until it answers.
 * A server that an earlier stack left on the same database file is stopped first; a port held by
 * anything else is refused (PortInUseError).
 */
export async function startDevServer(o: DevServerOptions): Promise<DevServer> {
  const ip = o.ip ?? '127.0.0.1';
  await stopLeftoverDevServer(o);
  const port = o.port ?? (await freePort(ip));
  const namespace = o.namespace ?? 'default';
  // Another process on these ports would answer the readiness probe in our server's place.
  for (const [p, what] of [[port, 'the Temporal port'], ...(o.uiPort !== undefined ? [[o.uiPort, 'the Temporal UI port']] : [])] as [number, string][]) {
    if (await portInUse(ip, p)) throw new PortInUseError(ip, p, what);
  }
  mkdirSync(path.dirname(o.dbFile), { recursive: true });
  const args = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(port),
    '--namespace',
    namespace,
    '--db-filename',
    o.dbFile,
    '--log-level',
    'warn',
    ...(o.uiPort !== undefined ? ['--ui-port', String(o.uiPort)] : ['--headless']),
    ...allSearchAttributes.flatMap((k) => ['--search-attribute', `${k.name}=Keyword`]),
  ];
  const logFile = o.logFile ?? `${o.dbFile.replace(/\.db$/, '')}.log`;
  const out = openSync(logFile, 'a');
  // Its own process group: a Ctrl-C in the terminal reaches the stack's processes, not the server,
  // which the stack stops last (after the worker has drained and reported its results).
  const child = spawn(o.cliPath, args, { stdio: ['ignore', out, out], detached: true });
  // Its pid beside the database: the next stack on this folder stops it if this one is killed.
  const pidFile = devServerPidFile(o.dbFile);
  if (child.pid) {
    writeServerPidFile(pidFile, {
      pid: child.pid,
      binary: o.cliPath,
      dataArg: `--db-filename ${o.dbFile}`,
      ports: { port, ...(o.uiPort !== undefined ? { uiPort: o.uiPort } : {}) },
      ownerPid: process.pid,
      startedAt: new Date().toISOString(),
    });
  }
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
    removeServerPidFile(pidFile, child.pid);
  });
  const address = `${ip}:${port}`;
  const deadline = Date.now() + (o.startTimeoutMs ?? 90_000);
  while (!(await canConnect(ip, port))) {
    if (exited) throw new Error(`temporal dev server ${exited} before answering; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`temporal dev server did not answer on ${address} within ${(o.startTimeoutMs ?? 90_000) / 1000}s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  o.logger.info(`temporal dev server on ${address}${o.uiPort !== undefined ? `, UI http://${ip}:${o.uiPort}` : ''} (db ${o.dbFile})`);
  return {
    address,
    namespace,
    ...(o.uiPort !== undefined ? { uiUrl: `http://${ip === '0.0.0.0' ? 'localhost' : ip}:${o.uiPort}` } : {}),
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited) return resolve();
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A port some other process listens on. */
export class PortInUseError extends Error {
  constructor(
    readonly host: string,
    readonly port: number,
    readonly what: string,
  ) {
    super(`${what} ${host}:${port} is already in use by another process`);
    this.name = 'PortInUseError';
  }
}

/** Whether something already listens on host:port (we try to listen there ourselves). */
export function portInUse(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRINUSE' || e.code === 'EACCES'));
    srv.listen(port, host, () => srv.close(() => resolve(false)));
  });
}

/** A TCP port free on `host` now (the one helper for it: lib/telemetry/metrics.ts). */
export const freePort = freeLocalPort;
