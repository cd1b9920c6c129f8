import { spawn } from 'node:child_process';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { readableLogLine } from '../../lib/logger.js';
import { processCpuSeconds } from '../../lib/process-cpu.js';
import { logContextEnv } from '../../lib/telemetry/log-context.js';
import { readLines } from '../../lib/read-lines.js';
import { traceparentEnv } from '../../lib/telemetry/trace-context.js';

/** Prefix of protocol lines on the child's stdout; anything else on stdout is ignored. */
export const PROTOCOL_PREFIX = '@@capstan ';

export type ChildMessage =
  | { type: 'progress'; data: unknown; cpuSeconds?: number }
  /** Sent every few seconds by a live child, between progress lines. */
  | { type: 'alive'; cpuSeconds?: number }
  | { type: 'result'; data: unknown; cpuSeconds: number }
  | { type: 'error'; message: string; code?: string; file?: string; retryable?: boolean };

/** A child job that failed. `code` comes from the child (e.g. DATA_CORRUPT) or is CHILD_CRASHED. */
export class ChildJobError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly file?: string;
  constructor(message: string, opts: { code: string; retryable: boolean; file?: string }) {
    super(message);
    this.name = 'ChildJobError';
    this.code = opts.code;
    this.retryable = opts.retryable;
    if (opts.file !== undefined) this.file = opts.file;
  }
}

export interface ChildJobOptions {
  /** The job description, written as JSON to `jobFile` and passed to the child. */
  job: unknown;
  /** Where to write the job file (the folder is created). */
  jobFile: string;
  /** Child entry; defaults to ml/training/child-main (.ts under tsx, .js when compiled). */
  script?: string;
  onProgress?: (data: unknown) => void;
  /** The child's periodic sign of life (its event loop turns): heartbeat the last progress again. */
  onAlive?: () => void;
  /**
   * The child's CPU time so far (for metering a job while it runs): measured by pid every
   * `usageEveryMs` (from /proc on Linux) and taken from each progress and alive line it sends;
   * never decreasing.
   */
  onUsage?: (u: { cpuSeconds: number }) => void;
  /** How often the child's CPU time is measured by pid (default 250 ms). */
  usageEveryMs?: number;
  /** Kills the child (SIGTERM, then SIGKILL after `killGraceMs`) when aborted. */
  signal?: AbortSignal;
  /** Extra environment for the child (e.g. CUDA_VISIBLE_DEVICES). */
  env?: Record<string, string>;
  killGraceMs?: number;
  /** Receives the child's stderr, line by line: JSON log lines (child-main's; relayLogLine logs them) and whatever else wrote there. */
  onStderr?: (line: string) => void;
}

export interface ChildJobOutcome<R> {
  result: R;
  /** CPU time (user + system) the child reported for itself. */
  cpuSeconds: number;
  wallSeconds: number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const isTs = import.meta.url.endsWith('.ts');

export function defaultChildScript(): string {
  return path.join(here, isTs ? 'child-main.ts' : 'child-main.js');
}

/**
 * Runs one ML job in a child Node process so tfjs never blocks the caller's event loop.
 * The child prints `@@capstan {json}` lines: progress (forwarded to `onProgress`), one result,
 * or an error. Rejects with ChildJobError on a reported error or a crash, and with the
 * signal's reason when aborted.
 */
export async function runChildJob<R>(opts: ChildJobOptions): Promise<ChildJobOutcome<R>> {
  opts.signal?.throwIfAborted();
  await mkdir(path.dirname(opts.jobFile), { recursive: true });
  await writeFile(opts.jobFile, JSON.stringify(opts.job));
  const script = opts.script ?? defaultChildScript();
  const args = script.endsWith('.ts')
    ? ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href, script, opts.jobFile]
    : [script, opts.jobFile];
  const started = performance.now();
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    // The caller's log context (run, stage, attempt) and the attempt's trace context: the child's
    // log lines carry the same ids, and its span joins the run's trace (when tracing is on).
    env: { ...process.env, ...logContextEnv(), ...traceparentEnv(), ...opts.env },
  });

  let result: { data: unknown; cpuSeconds: number } | undefined;
  let reported: ChildJobError | undefined;
  const stderrTail: string[] = [];
  let progressError: unknown;
  // The child's CPU so far: the larger of what it said and what /proc says, and never less than before.
  let cpuSoFar = 0;
  const usage = (cpuSeconds: number) => {
    if (!(cpuSeconds > cpuSoFar)) return;
    cpuSoFar = cpuSeconds;
    try {
      opts.onUsage?.({ cpuSeconds });
    } catch (e) {
      progressError ??= e;
    }
  };
  const pid = child.pid;
  const sampler =
    opts.onUsage && pid !== undefined
      ? setInterval(
          () => void processCpuSeconds(pid).then((c) => c !== undefined && child.exitCode === null && child.signalCode === null && usage(c)),
          opts.usageEveryMs ?? 250,
        )
      : undefined;
  sampler?.unref();

  void readLines(child.stdout, (line) => {
    if (!line.startsWith(PROTOCOL_PREFIX)) return;
    let msg: ChildMessage;
    try {
      msg = JSON.parse(line.slice(PROTOCOL_PREFIX.length)) as ChildMessage;
    } catch {
      return;
    }
    if ((msg.type === 'progress' || msg.type === 'alive') && typeof msg.cpuSeconds === 'number' && Number.isFinite(msg.cpuSeconds)) usage(msg.cpuSeconds);
    if (msg.type === 'progress') {
      try {
        opts.onProgress?.(msg.data);
      } catch (e) {
        progressError ??= e;
      }
    } else if (msg.type === 'alive') {
      try {
        opts.onAlive?.();
      } catch (e) {
        progressError ??= e;
      }
    } else if (msg.type === 'result') {
      result = { data: msg.data, cpuSeconds: msg.cpuSeconds };
    } else if (msg.type === 'error') {
      reported = new ChildJobError(msg.message, {
        code: msg.code ?? 'CHILD_FAILED',
        retryable: msg.retryable ?? true,
        ...(msg.file ? { file: msg.file } : {}),
      });
    }
  });
  void readLines(child.stderr, (line) => {
    stderrTail.push(readableLogLine(line));
    if (stderrTail.length > 40) stderrTail.shift();
    opts.onStderr?.(line);
  });

  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), opts.killGraceMs ?? 3000);
    killTimer.unref();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const exit = await new Promise<{ code: number | null; sig: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, sig) => resolve({ code, sig }));
  }).finally(() => {
    opts.signal?.removeEventListener('abort', onAbort);
    if (killTimer) clearTimeout(killTimer);
    if (sampler) clearInterval(sampler);
  });
  await rm(opts.jobFile, { force: true });

  if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error(`child job aborted: ${String(opts.signal.reason)}`);
  if (progressError) throw progressError;
  if (reported) throw reported;
  if (exit.code !== 0 || !result) {
    const why = exit.sig ? `killed by ${exit.sig}` : `exited with code ${exit.code}`;
    throw new ChildJobError(`training child ${why}${result ? '' : ' without a result'}: ${stderrTail.slice(-10).join('\n')}`, {
      code: 'CHILD_CRASHED',
      retryable: true,
    });
  }
  return { result: result.data as R, cpuSeconds: result.cpuSeconds, wallSeconds: (performance.now() - started) / 1000 };
}
