// Entry point: starts the workers this host serves (CAPSTAN_WORKER_ROLES: workflows, cpu, gpu).
import { DefaultLogger, Runtime as TemporalRuntime } from '@temporalio/worker';
import { loadConfig } from './app/config.js';
import { createRuntime } from './app/runtime.js';
import { connectWorker, temporalTarget } from './app/temporal.js';
import { createWorkers, runWorkers } from './app/workers.js';
import { collectGarbage } from './engine/retention.js';
import { createConsoleLogger } from './lib/logger.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  const logger = createConsoleLogger({ name: 'worker', level: config.logLevel });
  // Must run before any connection: drains workers on SIGINT/SIGTERM.
  TemporalRuntime.install({
    shutdownSignals: ['SIGINT', 'SIGTERM'],
    // The SDK's own lines (bundling, state changes) only from WARN up, unless debugging.
    logger: new DefaultLogger(config.logLevel === 'debug' ? 'DEBUG' : 'WARN'),
  });
  const rt = await createRuntime(config, logger);
  const target = temporalTarget(process.env);
  const connection = await connectWorker(target);
  const workers = await createWorkers({
    connection,
    namespace: target.namespace,
    taskQueues: config.taskQueues,
    roles: config.workerRoles,
    activities: { stages: rt.stages, artifacts: rt.artifacts, services: rt.services, logger, meter: rt.meter, cache: rt.cache, records: rt.records },
    shutdownGraceTime: config.shutdownGrace,
    activitySlots: config.activitySlots,
    gpuSlots: config.gpuSlots,
    ...(config.gpus ? { gpus: config.gpus } : {}),
    slotLeaseMs: config.slotLeaseMs,
  });
  logger.info(`worker up: ${target.connectionOptions.address} namespace ${target.namespace}; serving ${config.workerRoles.join(', ')}`, {
    plugins: rt.stages.list().map((p) => `${p.name}@${p.version}`),
  });
  // Retention: a worker serving cpu stages removes artifacts no run can need any more, periodically.
  const gc =
    config.gcEveryMs && config.workerRoles.includes('cpu')
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
  logger.info('worker stopped');
}

main().catch((e) => {
  process.stderr.write(`worker failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
