import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { readLines } from '../../lib/read-lines.js';
import { MAX_MESSAGE_BYTES } from './protocol.js';

/** The launcher that leads a stage process's group (plain JS: runs with the worker's Node, no tsx). */
export const LAUNCHER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'launcher.mjs');

export interface StageProcessOptions {
  /** The command: an argv list, never a shell string. */
  argv: string[];
  cwd: string;
  /** The whole environment of the process (nothing of the worker's is added). */
  env: Record<string, string>;
  /** Stops the process group: SIGTERM, then SIGKILL after `stopGraceMs`. */
  signal?: AbortSignal;
  stopGraceMs: number;
  /** Each line on the message pipe (fd 3), as sent. */
  onMessageLine(line: string): void;
  onStdout?(line: string): void;
  onStderr?(line: string): void;
  /** CPU seconds the process group has used so far (about once a second). */
  onUsage?(cpuSeconds: number): void;
  /** Called once with the launcher's pid (the process group id) when it has started. */
  onStart?(pgid: number): void;
}

export interface StageProcessExit {
  /** The command's exit code, or null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** CPU seconds of the command's whole process tree, measured from /proc by the launcher. */
  cpuSeconds: number;
  /** CPU seconds of the launcher itself. */
  launcherCpuSeconds: number;
  wallSeconds: number;
  /** Why the command could not start, when it could not. */
  startError?: string;
  /** Last lines of stderr (at most STDERR_TAIL_LINES lines and STDERR_TAIL_BYTES bytes). */
  stderrTail: string[];
  /** Whether the stop (abort) path sent signals to the group. */
  stopped: boolean;
}

export const STDERR_TAIL_LINES = 40;
export const STDERR_TAIL_BYTES = 8 * 1024;

/**
 * Runs one stage process under the launcher (a new process group) and resolves when the group
 * is gone. Never rejects for the command's own failure: the caller reads the exit and messages.
 */
export async function runStageProcess(o: StageProcessOptions): Promise<StageProcessExit> {
  const started = performance.now();
  const child = spawn(process.execPath, [LAUNCHER, ...o.argv], {
    cwd: o.cwd,
    env: { ...o.env, CAPSTAN_STOP_GRACE_MS: String(o.stopGraceMs) },
    stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
    detached: true,
  });
  const pgid = child.pid;
  const stderrTail: string[] = [];
  let exitReport: { code: number | null; signal: NodeJS.Signals | null; cpuSeconds: number; launcherCpuSeconds: number; error?: string } | undefined;
  let lastUsage = 0;
  let stopped = false;
  let killTimer: NodeJS.Timeout | undefined;

  const signalGroup = (sig: NodeJS.Signals) => {
    if (pgid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-pgid, sig);
    } catch {
      // already gone
    }
  };
  const onAbort = () => {
    stopped = true;
    signalGroup('SIGTERM');
    killTimer = setTimeout(() => signalGroup('SIGKILL'), o.stopGraceMs);
  };

  const streams = child.stdio as unknown as (Readable | null)[];
  // Each stream of the group: stdout and stderr are logs, fd 3 the stage's messages, fd 4 the launcher's reports.
  const onLine: Record<number, (line: string) => void> = {
    1: (line) => o.onStdout?.(line),
    2: (line) => {
      stderrTail.push(line.length > STDERR_TAIL_BYTES ? line.slice(0, STDERR_TAIL_BYTES) : line);
      while (stderrTail.length > STDERR_TAIL_LINES || (stderrTail.length > 1 && stderrTail.join('\n').length > STDERR_TAIL_BYTES)) stderrTail.shift();
      o.onStderr?.(line);
    },
    3: (line) => o.onMessageLine(line),
    4: (line) => {
      try {
        const r = JSON.parse(line) as { usage?: { cpuSeconds: number }; exit?: typeof exitReport };
        if (r.usage && Number.isFinite(r.usage.cpuSeconds)) {
          lastUsage = r.usage.cpuSeconds;
          o.onUsage?.(lastUsage);
        }
        if (r.exit) exitReport = r.exit;
      } catch {
        // not from our launcher
      }
    },
  };
  const closed = [1, 2, 3, 4].map((fd) => readLines(streams[fd]!, onLine[fd]!, { maxLineBytes: MAX_MESSAGE_BYTES }));

  const exited = new Promise<{ code: number | null; sig: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, sig: null, error }));
    child.once('exit', (code, sig) => resolve({ code, sig }));
  });
  if (pgid !== undefined) o.onStart?.(pgid);
  if (o.signal?.aborted) onAbort();
  else o.signal?.addEventListener('abort', onAbort, { once: true });

  const launcher = await exited;
  o.signal?.removeEventListener('abort', onAbort);
  if (killTimer) clearTimeout(killTimer);
  // Whatever is left in the group (the launcher killed by SIGKILL before it could): gone now.
  if (pgid !== undefined) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // the group is empty
    }
  }
  child.stdin?.destroy();
  // The pipes close once every process holding them has gone; don't wait on a straggler forever.
  await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, 2000).unref())]);
  for (const s of streams) s?.destroy();

  const wallSeconds = (performance.now() - started) / 1000;
  if (launcher.error) {
    return {
      code: null,
      signal: null,
      cpuSeconds: 0,
      launcherCpuSeconds: 0,
      wallSeconds,
      startError: `cannot start the launcher: ${launcher.error.message}`,
      stderrTail,
      stopped,
    };
  }
  if (exitReport) {
    return {
      code: exitReport.code,
      signal: exitReport.signal,
      cpuSeconds: Math.max(exitReport.cpuSeconds, lastUsage),
      launcherCpuSeconds: exitReport.launcherCpuSeconds,
      wallSeconds,
      ...(exitReport.error ? { startError: exitReport.error } : {}),
      stderrTail,
      stopped,
    };
  }
  // The launcher was killed before the command exited (a stop's SIGKILL): the last sample is what we know.
  return { code: null, signal: launcher.sig ?? 'SIGKILL', cpuSeconds: lastUsage, launcherCpuSeconds: 0, wallSeconds, stderrTail, stopped };
}
