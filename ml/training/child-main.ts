// Entry point of a training child process: `node --import tsx child-main.ts <job.json>`.
// stdout carries only protocol lines (`@@capstan {json}`); everything else goes to stderr, as JSON
// log lines with the run, stage and attempt ids the parent handed down (CAPSTAN_LOG_CONTEXT): the
// parent relays them into its own log (relayLogLine).
import { readFileSync } from 'node:fs';
import { format } from 'node:util';
import { createConsoleLogger } from '../../lib/logger.js';
import { LOG_CONTEXT_ENV, logContextFromEnv, withLogContext } from '../../lib/telemetry/log-context.js';
import { contextFromTraceparent, startChildTracing, tracingConfigured, withSpan, type Tracing } from '../../lib/telemetry/tracing.js';
import { DataError } from '../data/data-error.js';
import { PROTOCOL_PREFIX, type ChildMessage } from './child-runner.js';
import { runEvaluateJob } from './evaluate-job.js';
import { runFineTuneJob } from './fine-tune-job.js';
import type { MlJob } from './jobs.js';
import { runPretrainJob } from './pretrain-job.js';
import { runReplicaJob, SyncTimeoutError } from './replica-job.js';

const ALIVE_EVERY_MS = 5000;

function emit(msg: ChildMessage): Promise<void> {
  return new Promise((resolve) => process.stdout.write(`${PROTOCOL_PREFIX + JSON.stringify(msg)}\n`, () => resolve()));
}

/** This process's CPU time so far (user + system): sent with every message so the parent can meter a running job. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * Always JSON at every level: the parent reads these lines (it filters by its own level and
 * prints them in its own format).
 */
const logger = createConsoleLogger({ name: 'training', level: 'debug', format: 'json' });

/** This child's tracer when its parent passed TRACEPARENT and OTEL_* asks for traces; flushed before it exits. */
let tracing: Tracing | undefined;

async function main(): Promise<void> {
  // Libraries that print (tfjs hints) must not mix with the protocol on stdout: their lines are debug lines.
  const toLog = (...a: unknown[]) => logger.debug(format(...a));
  console.log = console.info = console.warn = console.error = console.debug = toLog;
  // The parent holds our stdin open; when it goes away, so do we.
  process.stdin.on('end', () => process.exit(137));
  process.stdin.on('error', () => process.exit(137));
  process.stdin.resume();
  process.on('SIGTERM', () => process.exit(143));
  // Proves liveness between progress lines (long epochs, slow data loading); see fitPass.
  setInterval(() => void emit({ type: 'alive', cpuSeconds: cpuSeconds() }), ALIVE_EVERY_MS).unref();

  const jobFile = process.argv[2];
  if (!jobFile) throw new Error('usage: child-main <job.json>');
  const job = JSON.parse(readFileSync(jobFile, 'utf8')) as MlJob;
  tracing = await startChildTracing({ enabled: tracingConfigured(process.env), defaultServiceName: 'capstan-training', env: process.env });
  const t0 = performance.now();
  logger.info(`training job ${job.kind} started`, { pid: process.pid });
  const data = await withSpan(
    'capstan.training.child',
    { 'process.pid': process.pid, 'capstan.job.kind': job.kind },
    () => runJob(job),
    contextFromTraceparent(process.env),
  );
  logger.info(`training job ${job.kind} finished`, {
    seconds: Number(((performance.now() - t0) / 1000).toFixed(3)),
    cpuSeconds: Number(cpuSeconds().toFixed(3)),
  });
  await emit({ type: 'result', data, cpuSeconds: cpuSeconds() });
}

async function runJob(job: MlJob): Promise<unknown> {
  const progress = (data: unknown) => void emit({ type: 'progress', data, cpuSeconds: cpuSeconds() });
  let data: unknown;
  switch (job.kind) {
    case 'pretrain':
      data = await runPretrainJob(job, progress);
      break;
    case 'replica':
      data = await runReplicaJob(job, progress);
      break;
    case 'evaluate':
      data = await runEvaluateJob(job);
      break;
    case 'fine-tune':
      data = await runFineTuneJob(job, progress);
      break;
    default:
      throw new Error(`unknown job kind ${(job as { kind: string }).kind}`);
  }
  return data;
}

/** Exports this child's span before it exits (a failed export never changes the job's outcome). */
async function flush(): Promise<void> {
  await tracing?.shutdown().catch((e: unknown) => logger.warn('trace export failed', { error: (e as Error).message }));
}

// The whole process in the parent's context: the failure's line carries its ids too.
void withLogContext(logContextFromEnv(process.env[LOG_CONTEXT_ENV]), () =>
  main().then(
    async () => {
      await flush();
      process.exit(0);
    },
    async (e: unknown) => {
      await flush();
      const err = e instanceof Error ? e : new Error(String(e));
      logger.error('training job failed', { error: err });
      if (err instanceof DataError)
        await emit({ type: 'error', message: err.message, code: err.code, retryable: false, ...(err.file ? { file: err.file } : {}) });
      else if (err instanceof SyncTimeoutError) await emit({ type: 'error', message: err.message, code: 'REPLICA_SYNC_TIMEOUT', retryable: true });
      else await emit({ type: 'error', message: err.message, code: 'TRAINING_FAILED', retryable: true });
      process.exit(1);
    },
  ),
);
