import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import type { Logger } from '../lib/logger.js';

/**
 * What a server started for a data folder leaves there while it runs (`<dir>/<name>.pid`), so that
 * the next stack on that folder can find it after a crash: a SIGKILL of `npm start`'s process
 * group (an out-of-memory kill, a closed terminal) leaves the server running in its own group.
 */
export const serverPidFileSchema = z.object({
  pid: z.number().int().positive(),
  /** The binary as it was spawned: it is argv[0] of the server's command line. */
  binary: z.string(),
  /** What ties the command line to this data folder, e.g. `--db-filename /x/.data/temporal/dev.db`. */
  dataArg: z.string(),
  ports: z.record(z.string(), z.number().int()),
  /** The process that started it; while it is the server's parent, that stack is still running. */
  ownerPid: z.number().int().positive(),
  startedAt: z.string(),
});
export type ServerPidFile = z.infer<typeof serverPidFileSchema>;

export function writeServerPidFile(file: string, record: ServerPidFile): void {
  writeFileSync(file, `${JSON.stringify(record)}\n`);
}

/** Removes the pid file if it still names this pid (a newer server may have replaced it). */
export function removeServerPidFile(file: string, pid: number | undefined): void {
  try {
    if (pid === undefined || readPidFile(file)?.pid === pid) rmSync(file, { force: true });
  } catch {
    /* gone already */
  }
}

/** A server on this data folder that a stack still running owns: it is not a leftover to stop. */
export class ServerOwnedError extends Error {
  constructor(
    readonly what: string,
    readonly pid: number,
    readonly ownerPid: number,
    readonly where: string,
  ) {
    super(`a ${what} (pid ${pid}) of a stack that is still running (pid ${ownerPid}) uses ${where}; stop that stack first`);
    this.name = 'ServerOwnedError';
  }
}

export interface LeftoverOptions {
  pidFile: string;
  /** For the log: 'Temporal dev server', 'SeaweedFS server'. */
  what: string;
  /** The data folder, for the log. */
  where: string;
  /** What the command line must contain besides the binary (the data folder's db file or dir argument). */
  dataArg: string;
  logger: Logger;
  /** How long SIGTERM gets before SIGKILL (default 10 s). */
  graceMs?: number;
}

export type LeftoverOutcome = { kind: 'none' } | { kind: 'stale'; pid: number; reason: string } | { kind: 'stopped'; pid: number };

/**
 * Before a server starts on a data folder: if the pid file there names a live process that really
 * is that server (its command line has the recorded binary and this folder's data argument, so a
 * reused pid is never taken for it) and the stack that started it is gone, stops it (SIGTERM to
 * its process group, SIGKILL after the grace period) and says so. A pid file naming a dead or
 * unrelated process is removed. A server whose stack still runs is refused (ServerOwnedError).
 *
 * Stopping rather than reusing: the new stack then runs the server with its own flags (ports, UI,
 * search attributes, log file) and owns its lifetime; the server keeps its state in the data folder,
 * so a restart loses nothing (runs in flight carry on, as after a Ctrl-C).
 */
export async function stopLeftoverServer(o: LeftoverOptions): Promise<LeftoverOutcome> {
  let record: Partial<ServerPidFile> | undefined;
  try {
    record = readPidFile(o.pidFile);
  } catch {
    return { kind: 'none' };
  }
  const stale = (pid: number, reason: string): LeftoverOutcome => {
    rmSync(o.pidFile, { force: true });
    o.logger.info(`removed a stale pid file ${o.pidFile}: ${reason}`);
    return { kind: 'stale', pid, reason };
  };
  if (!record?.pid) return stale(0, 'it names no pid');
  const pid = record.pid;
  const info = processInfo(pid);
  if (!info) return stale(pid, `pid ${pid} is not running`);
  // Whole arguments only: `-dir=/x/a` must not match a server on `/x/ab`.
  const has = (arg: string) => ` ${info.command} `.includes(` ${arg} `);
  if (!has(o.dataArg) || (record.binary !== undefined && !has(record.binary))) {
    return stale(pid, `pid ${pid} is not a ${o.what} on ${o.where} (${info.command.slice(0, 120)})`);
  }
  if (record.ownerPid !== undefined && info.ppid === record.ownerPid) throw new ServerOwnedError(o.what, pid, record.ownerPid, o.where);
  await terminate(pid, o.graceMs ?? 10_000);
  rmSync(o.pidFile, { force: true });
  o.logger.warn(`stopped a ${o.what} (pid ${pid}) that an earlier stack left on ${o.where}; starting a fresh one`);
  return { kind: 'stopped', pid };
}

/** The pid file's record; an older stack wrote the bare pid. Throws when there is no file. */
function readPidFile(file: string): Partial<ServerPidFile> | undefined {
  const text = readFileSync(file, 'utf8').trim();
  if (/^\d+$/.test(text)) return { pid: Number(text) };
  try {
    const parsed = serverPidFileSchema.partial().safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

interface ProcessInfo {
  /** The command line, arguments joined by spaces. */
  command: string;
  ppid: number;
}

/** A live (not zombie) process's command line and parent, from /proc or else `ps`; undefined when it is gone. */
export function processInfo(pid: number): ProcessInfo | undefined {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid …; comm may hold spaces and parentheses: split after the last ')'.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z' || state === 'X') return undefined;
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    return { command, ppid: Number(ppid) };
  } catch {
    /* no /proc (macOS): ask ps */
  }
  const r = spawnSync('ps', ['-o', 'ppid=,stat=,command=', '-p', String(pid)], { encoding: 'utf8' });
  const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(r.stdout ?? '');
  if (!m || m[2]!.startsWith('Z')) return undefined;
  return { ppid: Number(m[1]), command: m[3]!.trim() };
}

/** SIGTERM to the process group (the server was spawned detached: it leads its own), SIGKILL after graceMs. */
async function terminate(pid: number, graceMs: number): Promise<void> {
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-pid, s);
    } catch {
      try {
        process.kill(pid, s);
      } catch {
        /* gone */
      }
    }
  };
  signal('SIGTERM');
  if (await exited(pid, graceMs)) return;
  signal('SIGKILL');
  if (!(await exited(pid, 5_000))) throw new Error(`pid ${pid} did not exit after SIGKILL`);
}

async function exited(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (processInfo(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}
