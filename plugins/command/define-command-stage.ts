import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { z } from 'zod';
import { StageError } from '../../lib/errors.js';
import {
  PLUGIN_API_VERSION,
  type ArtifactRef,
  type DeclaredEstimate,
  type EstimateScale,
  type ResourceClass,
  type StageContext,
  type StageInputs,
  type StageMetrics,
  type StagePlugin,
  type StageRetryPolicy,
  type StageTimeouts,
} from '../contract.js';
import { parseMessageLine, STAGE_PROTOCOL_VERSION, type StageMessage } from './protocol.js';
import { runStageProcess, type StageProcessExit } from './run-process.js';
import { relayLogLine } from '../../lib/logger.js';
import { otelEnv, traceparentEnv, tracingEnabled } from '../../lib/telemetry/trace-context.js';

/** An argv list with placeholders, or a function of the params that makes one. */
export type CommandSpec<P> = readonly string[] | ((params: P, ctx: StageContext) => readonly string[]);

export interface CommandStageOptions<P, C extends string = string> {
  /** `<scope>:<kebab-name>`. */
  name: string;
  version: string;
  description: string;
  paramsSchema: z.ZodType<P>;
  consumes: readonly C[];
  produces: string[];
  resource: ResourceClass;
  /**
   * The process to run (docs/stage-protocol.md): an argv list, never a shell string. Placeholders:
   * `{python}`, `{dir}`, `{context}`, `{workDir}`, `{params.NAME}`.
   */
  command: CommandSpec<P>;
  /** What `{dir}` stands for (a manifest's folder); default: the worker's working folder. */
  dir?: string;
  /** Extra environment of the process (the worker's own environment is not passed on). */
  env?: Record<string, string>;
  /** Between SIGTERM and SIGKILL when the stage is stopped (default 10 s). */
  stopGraceMs?: number;
  retry?: StageRetryPolicy;
  timeouts?: Partial<StageTimeouts>;
  estimateScale?: EstimateScale;
  estimate?(params: P, inputs: { bytes: number | undefined }): DeclaredEstimate | undefined;
  /** The JSON Schema the params were declared with (manifests), listed by `stagePlugins` as is. */
  paramsJsonSchema?: unknown;
}

const PLACEHOLDER = /\{([^{}]*)\}/g;
const KNOWN = new Set(['python', 'dir', 'context', 'workDir']);

/** Problems with the placeholders of an argv list (unknown names), for a refusal at load. */
export function placeholderProblems(argv: readonly string[]): string[] {
  const problems: string[] = [];
  for (const arg of argv) {
    for (const m of arg.matchAll(PLACEHOLDER)) {
      const name = m[1]!;
      if (!KNOWN.has(name) && !/^params\.[A-Za-z_][A-Za-z0-9_]*$/.test(name))
        problems.push(`unknown placeholder {${name}} in command (known: {python}, {dir}, {context}, {workDir}, {params.NAME})`);
    }
  }
  return problems;
}

/** Environment variables of the worker a stage process gets (nothing secret). */
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

/**
 * A stage that runs a process in any language through the stage protocol (docs/stage-protocol.md):
 * the worker launches it in a process group of its own with a context file, reads its messages
 * (logs, epochs, checkpoints, metrics, outputs, typed errors), measures its CPU, and stops it
 * with the attempt. Everything an in-process stage gets — retries resuming from a checkpoint,
 * heartbeats, cancellation, curves, budgets, metering — it gets too.
 */
export function defineCommandStage<P, const C extends string = never>(o: CommandStageOptions<P, C>): StagePlugin<P, C> {
  if (Array.isArray(o.command)) {
    const problems = placeholderProblems(o.command as string[]);
    if (problems.length) throw new StageError(`${o.name}: ${problems.join('; ')}`, { type: 'PLUGIN_CONTRACT' });
    if (o.command.length === 0) throw new StageError(`${o.name}: command is empty`, { type: 'PLUGIN_CONTRACT' });
  }
  const plugin: StagePlugin<P, C> & { paramsJsonSchema?: unknown; command?: true } = {
    name: o.name,
    version: o.version,
    apiVersion: PLUGIN_API_VERSION,
    description: o.description,
    paramsSchema: o.paramsSchema,
    consumes: o.consumes,
    produces: o.produces,
    resource: o.resource,
    ...(o.retry ? { retry: o.retry } : {}),
    ...(o.timeouts ? { timeouts: o.timeouts } : {}),
    ...(o.estimateScale ? { estimateScale: o.estimateScale } : {}),
    ...(o.estimate ? { estimate: o.estimate } : {}),
    ...(o.paramsJsonSchema !== undefined ? { paramsJsonSchema: o.paramsJsonSchema } : {}),
    run: (ctx, params, inputs) => runCommandStage(o, ctx, params, inputs),
  };
  return plugin;
}

/** The checkpoint a command stage heartbeats: a URI in the store plus what the process said of it. */
interface ProtocolCheckpoint {
  checkpoint: string;
  details: Record<string, unknown>;
}

function isProtocolCheckpoint(d: unknown): d is ProtocolCheckpoint {
  return !!d && typeof d === 'object' && typeof (d as ProtocolCheckpoint).checkpoint === 'string' && typeof (d as ProtocolCheckpoint).details === 'object';
}

async function runCommandStage<P, C extends string>(o: CommandStageOptions<P, C>, ctx: StageContext, params: P, inputs: StageInputs<C>) {
  const argvTemplate = typeof o.command === 'function' ? o.command(params, ctx) : o.command;
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'capstan-stage-'));
  try {
    const checkpointDir = await ctx.checkpointDir();
    const last = await lastCheckpoint(ctx);
    const contextFile = path.join(workDir, 'capstan-context.json');
    const python = ctx.services.python ?? 'python3';
    const argv = argvTemplate.map((a) => substitute(a, { python, dir: o.dir ?? process.cwd(), context: contextFile, workDir }, params));

    const inputFolders: Record<string, unknown> = {};
    for (const [kind, ref] of Object.entries(inputs) as [string, ArtifactRef][]) {
      inputFolders[kind] = { path: await ctx.localPath(ref), uri: ref.uri, sha256: ref.sha256, bytes: ref.bytes, meta: ref.meta ?? {} };
    }
    const outputs = openOutputs(ctx, o.produces);
    // Writes the context, runs the process, and says how it ended (throws its error).
    const runProcess = async () => {
      const outputDirs = await outputs.ready;
      const context = {
        protocol: STAGE_PROTOCOL_VERSION,
        run: {
          id: ctx.runId,
          pipeline: ctx.pipeline,
          stage: ctx.stageId,
          plugin: o.name,
          pluginVersion: o.version,
          attempt: ctx.attempt,
          replica: ctx.replica ?? null,
        },
        params,
        inputs: inputFolders,
        outputs: Object.fromEntries(Object.entries(outputDirs).map(([k, dir]) => [k, { path: dir }])),
        checkpoint: { dir: checkpointDir, last: last ?? null },
        workDir,
        device: ctx.device ? { kind: ctx.device.kind, id: ctx.device.id, label: ctx.device.label } : null,
        messages: { fd: 3 },
      };
      await writeFile(contextFile, JSON.stringify(context, null, 2));

      const env: Record<string, string> = {};
      for (const k of PASSED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
      Object.assign(env, o.env ?? {});
      if (ctx.device) Object.assign(env, ctx.device.kind === 'gpu' ? ctx.device.env : { CUDA_VISIBLE_DEVICES: '', CAPSTAN_CPU_DEVICE: ctx.device.id });
      Object.assign(env, { PYTHONUNBUFFERED: '1', CAPSTAN_STAGE_CONTEXT: contextFile });
      // Tracing on: the process joins the attempt's trace (TRACEPARENT, TRACESTATE) and exports to
      // where the worker does (OTEL_*, except the worker's service name: the process names itself).
      if (tracingEnabled()) {
        const { OTEL_SERVICE_NAME: _own, ...otel } = otelEnv(process.env);
        Object.assign(env, otel, traceparentEnv());
      }

      const session = protocolSession(ctx, o, params, checkpointDir, last !== undefined);
      const stop = new AbortController();
      const exit = await runStageProcess({
        argv,
        cwd: workDir,
        env,
        signal: AbortSignal.any([ctx.signal, stop.signal]),
        stopGraceMs: o.stopGraceMs ?? 10_000,
        onMessageLine: (line) => {
          if (!session.handle(line)) stop.abort();
        },
        onStdout: (line) => relayLogLine(ctx.logger, line, 'info'),
        onStderr: (line) => relayLogLine(ctx.logger, line),
        onUsage: (cpuSeconds) => ctx.meter.running?.({ cpuSeconds, wholeAttempt: true }),
      });
      // Measured by pid (the launcher reads /proc), so it is the attempt's whole CPU use.
      ctx.meter.add({
        cpuSeconds: exit.cpuSeconds + exit.launcherCpuSeconds,
        wholeAttempt: true,
        ...(session.gpuSeconds > 0 ? { deviceSeconds: session.gpuSeconds } : {}),
      });

      if (ctx.signal.aborted) throw ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('stage stopped');
      const failure = outcomeError(o, exit, session, python);
      if (failure) throw failure;
      return { exit, session };
    };
    // Whatever fails from here on (the process, or writing its context), the open outputs fail with it.
    const ran = await runProcess().catch(async (e: unknown) => {
      outputs.fail(e instanceof Error ? e : new Error(String(e)));
      await outputs.settled;
      throw e;
    });
    const { exit, session } = ran;
    outputs.succeed(session.declared);

    const refs = await outputs.refs();
    return {
      outputs: refs,
      metrics: {
        ...session.metrics,
        protocol: STAGE_PROTOCOL_VERSION,
        ...(session.sdk ? { sdk: session.sdk } : {}),
        processCpuSeconds: round3(exit.cpuSeconds),
        processWallSeconds: round3(exit.wallSeconds),
      } satisfies StageMetrics,
    };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function substitute<P>(arg: string, values: Record<string, string>, params: P): string {
  return arg.replace(PLACEHOLDER, (whole, name: string) => {
    if (name in values) return values[name]!;
    if (name.startsWith('params.')) {
      const v = (params as Record<string, unknown> | undefined)?.[name.slice(7)];
      if (v === undefined || v === null)
        throw new StageError(`command placeholder ${whole} has no value (the param is not set and has no default)`, { type: 'PLUGIN_PARAMS_INVALID' });
      return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
    }
    return whole;
  });
}

/** The previous attempt's checkpoint as the process sees it: a local path and its details. */
async function lastCheckpoint(ctx: StageContext): Promise<{ path: string; details: Record<string, unknown> } | undefined> {
  if (!isProtocolCheckpoint(ctx.lastCheckpoint)) return undefined;
  try {
    return { path: await ctx.localPath(ctx.lastCheckpoint.checkpoint), details: ctx.lastCheckpoint.details };
  } catch (e) {
    ctx.logger.warn('the last checkpoint is not usable; the process starts without one', {
      checkpoint: ctx.lastCheckpoint.checkpoint,
      error: (e as Error).message,
    });
    return undefined;
  }
}

/**
 * One output folder per produced kind, all open while the process runs: each `ctx.output` write
 * waits for the process and then seals its folder (or fails with it).
 */
function openOutputs(ctx: StageContext, kinds: string[]) {
  const dirs: Record<string, string> = {};
  let resolveReady!: () => void;
  const ready = new Promise<Record<string, string>>((r) => (resolveReady = () => r(dirs)));
  let finish!: (metas: Record<string, Record<string, unknown>>) => void;
  let abort!: (e: Error) => void;
  const done = new Promise<Record<string, Record<string, unknown>>>((res, rej) => {
    finish = res;
    abort = rej;
  });
  done.catch(() => undefined);
  const writes = kinds.map((kind) =>
    ctx.output(kind, async (dir) => {
      dirs[kind] = dir;
      if (Object.keys(dirs).length === kinds.length) resolveReady();
      const metas = await done;
      return metas[kind] ?? {};
    }),
  );
  if (kinds.length === 0) resolveReady();
  // A folder that cannot be made fails before the process starts.
  const failedEarly = Promise.all(writes).then(
    () => new Promise<never>(() => undefined),
    (e: unknown) => Promise.reject(e),
  );
  return {
    ready: Promise.race([ready, failedEarly]),
    succeed: (metas: Record<string, Record<string, unknown>>) => finish(metas),
    fail: (e: Error) => abort(e),
    settled: Promise.allSettled(writes),
    refs: () => Promise.all(writes).then((refs) => Object.fromEntries(kinds.map((k, i) => [k, refs[i]!]))),
  };
}

/** What the messages of one process said, and how they drive the stage context. */
function protocolSession<P>(ctx: StageContext, o: CommandStageOptions<P>, params: P, checkpointDir: string, resumed: boolean) {
  let opened = false;
  // Until the process names a new checkpoint, heartbeats keep the one it resumed from.
  let lastBeat: ProtocolCheckpoint | Record<string, never> = resumed && isProtocolCheckpoint(ctx.lastCheckpoint) ? ctx.lastCheckpoint : {};
  const unknownTypes = new Set<string>();
  const s = {
    sdk: undefined as string | undefined,
    failure: undefined as StageError | undefined,
    error: undefined as Extract<StageMessage, { type: 'error' }>['error'] | undefined,
    metrics: {} as StageMetrics,
    declared: {} as Record<string, Record<string, unknown>>,
    gpuSeconds: 0,
    /** Handles one line; false when the process must be stopped (a protocol failure). */
    handle(line: string): boolean {
      if (s.failure) return false;
      const parsed = parseMessageLine(line);
      if (!parsed.ok) return fail(`stage protocol error: ${parsed.problem}`, 'STAGE_PROTOCOL_ERROR');
      if ('unknownType' in parsed) {
        if (!unknownTypes.has(parsed.unknownType)) ctx.logger.debug(`ignoring stage message of unknown type "${parsed.unknownType}"`);
        unknownTypes.add(parsed.unknownType);
        return true;
      }
      const m = parsed.message;
      if (!opened && m.type !== 'open')
        return fail(`stage protocol error: the first message must be "open" (with the protocol version), got "${m.type}"`, 'STAGE_PROTOCOL_ERROR');
      switch (m.type) {
        case 'open':
          if (m.protocol !== STAGE_PROTOCOL_VERSION) {
            return fail(
              `the stage process speaks stage protocol ${m.protocol}${m.sdk ? ` (${m.sdk})` : ''}, but this worker speaks protocol ${STAGE_PROTOCOL_VERSION}: install an SDK for protocol ${STAGE_PROTOCOL_VERSION} or upgrade Capstan (docs/stage-protocol.md)`,
              'STAGE_PROTOCOL_VERSION',
            );
          }
          opened = true;
          if (m.sdk) s.sdk = m.sdk;
          break;
        case 'log': {
          const level = m.level === 'warning' ? 'warn' : m.level;
          ctx.logger[level](m.message, m.fields);
          break;
        }
        case 'epoch': {
          // The same line the built-in trainers log: the records turn it into StageRun.epochs and curves.
          const declared = (params as { epochs?: unknown } | undefined)?.epochs;
          const total = m.epochs ?? (typeof declared === 'number' && Number.isInteger(declared) ? declared : m.epoch);
          ctx.logger.info(`epoch ${m.epoch}/${total}`, m.metrics);
          ctx.heartbeat(lastBeat);
          break;
        }
        case 'checkpoint': {
          const abs = path.resolve(checkpointDir, m.path);
          if (abs !== checkpointDir && !abs.startsWith(checkpointDir + path.sep))
            return fail(`stage protocol error: checkpoint path ${JSON.stringify(m.path)} is outside the checkpoint folder`, 'STAGE_PROTOCOL_ERROR');
          lastBeat = { checkpoint: ctx.checkpointUri(abs), details: m.details };
          ctx.heartbeat(lastBeat);
          break;
        }
        case 'heartbeat':
          ctx.heartbeat(lastBeat);
          break;
        case 'metrics':
          Object.assign(s.metrics, m.metrics);
          break;
        case 'usage':
          if (m.gpuSeconds !== undefined) s.gpuSeconds = m.gpuSeconds;
          break;
        case 'output':
          if (!o.produces.includes(m.kind))
            return fail(`stage protocol error: output "${m.kind}" is not one this stage produces (${o.produces.join(', ') || 'none'})`, 'STAGE_PROTOCOL_ERROR');
          s.declared[m.kind] = m.meta ?? {};
          break;
        case 'error':
          s.error = m.error;
          break;
      }
      return true;
    },
  };
  function fail(message: string, type: string): false {
    s.failure = new StageError(message, { type, retryable: false });
    return false;
  }
  return s;
}

/** The error of a finished process, or undefined when it succeeded. */
function outcomeError<P>(o: CommandStageOptions<P>, exit: StageProcessExit, s: ReturnType<typeof protocolSession>, python: string): StageError | undefined {
  if (s.failure) return s.failure;
  const tail = exit.stderrTail.slice(-15).join('\n');
  const withTail = (msg: string) => (tail ? `${msg}\n--- last lines of stderr ---\n${tail}` : msg);
  if (s.error) {
    const e = s.error;
    return new StageError(e.badInput ? `${e.type}: ${e.message}` : withTail(`${e.type}: ${e.message}`), {
      type: e.type,
      retryable: e.retryable && !e.badInput,
      details: { badInput: e.badInput, exitCode: exit.code, ...(e.traceback ? { traceback: e.traceback.slice(-4000) } : {}) },
    });
  }
  if (exit.startError) {
    const hint = exit.startError.includes(python) ? ` (the Python is ${python}: run npm run setup:python, or set CAPSTAN_PYTHON)` : '';
    return new StageError(`the stage command could not start: ${exit.startError}${hint}`, { type: 'STAGE_COMMAND_NOT_FOUND', retryable: false });
  }
  if (exit.code === 0) {
    const missing = o.produces.filter((k) => !(k in s.declared));
    if (missing.length)
      return new StageError(
        `the stage process exited 0 without declaring its output${missing.length > 1 ? 's' : ''} ${missing.map((k) => `"${k}"`).join(', ')} (send an "output" message, e.g. ctx.output("${missing[0]}") in the Python SDK)`,
        { type: 'STAGE_OUTPUT_MISSING', retryable: false },
      );
    return undefined;
  }
  const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
  return new StageError(withTail(`the stage process ${how}`), {
    type: 'STAGE_PROCESS_FAILED',
    retryable: true,
    details: { exitCode: exit.code, signal: exit.signal },
  });
}
