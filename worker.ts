// Entry point: starts the workers this host serves (CAPSTAN_WORKER_ROLES: workflows, cpu, gpu).
import { hostname } from 'node:os';
import path from 'node:path';
import { DefaultLogger, Runtime as TemporalRuntime } from '@temporalio/worker';
import { placeRoles } from './activities/devices.js';
import { loadConfig } from './app/config.js';
import { createRuntime } from './app/runtime.js';
import { connectWorker, temporalTarget } from './app/temporal.js';
import { createWorkers, runWorkers } from './app/workers.js';
import { collectGarbage } from './engine/retention.js';
import { createConsoleLogger } from './lib/logger.js';
import { startTracing } from './lib/telemetry/tracing.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  const logger = createConsoleLogger({ name: 'worker', level: config.logLevel });
  // The gpu role only with devices: CAPSTAN_GPUS, or GPUs found here (refused when asked for without either).
  const placed = placeRoles({ roles: config.workerRoles, explicit: config.workerRolesExplicit, ...(config.gpus ? { gpus: config.gpus } : {}) });
  if (placed.note) logger.warn(placed.note);
  // Must run before any connection: drains workers on SIGINT/SIGTERM.
  TemporalRuntime.install({
    shutdownSignals: ['SIGINT', 'SIGTERM'],
    // The SDK's own lines (bundling, state changes) only from WARN up, unless debugging.
    logger: new DefaultLogger(config.logLevel === 'debug' ? 'DEBUG' : 'WARN'),
  });
  // Before the workers are created: they install Temporal's tracing interceptors when it runs.
  const tracing = await startTracing({ enabled: config.telemetry.tracing, defaultServiceName: 'capstan-worker', env: process.env });
  const rt = await createRuntime(config, logger);
  const target = temporalTarget(process.env);
  const connection = await connectWorker(target);
  const workers = await createWorkers({
    connection,
    namespace: target.namespace,
    taskQueues: config.taskQueues,
    roles: placed.roles,
    activities: { stages: rt.stages, artifacts: rt.artifacts, services: rt.services, logger, meter: rt.meter, cache: rt.cache, records: rt.records, tokens: rt.tokens },
    shutdownGraceTime: config.shutdownGrace,
    activitySlots: config.activitySlots,
    gpuSlots: config.gpuSlots,
    ...(placed.gpus ? { gpus: placed.gpus } : {}),
    slotLeaseMs: config.slotLeaseMs,
    slotRevokeAfterMs: config.slotRevokeAfterMs,
    // A worker of a stack killed on this folder left reports the keeper would count until their lease ends: withdrawn at start.
    slotRecordsDir: path.join(config.dataDir, 'workers'),
    ...(config.host ? { host: config.host, identity: `${process.pid}@${config.host}` } : {}),
  });
  logger.info(`worker up: ${target.connectionOptions.address} namespace ${target.namespace}; serving ${placed.roles.join(', ')}${placed.gpus ? ` (devices ${placed.gpus.map((d) => `${d.kind}:${d.id}`).join(', ')} on ${config.host ?? hostname()})` : ''}; artifacts ${rt.artifacts.describe()}`, {
    plugins: rt.stages.list().map((p) => `${p.name}@${p.version}`),
  });
  // Retention: a worker serving cpu stages removes artifacts no run can need any more, periodically.
  const gc =
    config.gcEveryMs && placed.roles.includes('cpu')
      ? setInterval(() => {
          collectGarbage({ artifacts: rt.artifacts, db: rt.db, policy: { keepRunsMs: config.retentionMs } }).then(
            (r) => r.removed.length && logger.info(`garbage collected: ${r.removed.length} folders, ${r.bytesFreed} bytes`),
            (e: unknown) => logger.warn('garbage collection failed', { error: e instanceof Error ? e.message : String(e) }),
          );
        }, config.gcEveryMs)
      : undefined;
  gc?.unref();
  await runWorkers(workers);
  if (gc) clearInterval(gc);
  await connection.close();
  await rt.close();
  await tracing?.shutdown();
  logger.info('worker stopped');
}

main().catch((e) => {
  process.stderr.write(`worker failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
