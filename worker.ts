// Entry point: starts the workers this host serves (CAPSTAN_WORKER_ROLES: workflows, cpu, gpu).
import { hostname } from 'node:os';
import path from 'node:path';
import { DefaultLogger, Runtime as TemporalRuntime } from '@temporalio/worker';
import { placeRoles } from './activities/devices.js';
import { loadConfig, logFormatFromEnv } from './app/config.js';
import { workerHealth } from './app/health.js';
import { createRuntime } from './app/runtime.js';
import { sdkLogFunction } from './app/sdk-logs.js';
import { connectWorker, temporalTarget } from './app/temporal.js';
import { createWorkerTelemetry, sdkMetricsEndpoint, sdkTelemetryOptions } from './app/worker-metrics.js';
import { createWorkers, runWorkers } from './app/workers.js';
import { collectGarbage } from './engine/retention.js';
import { createConsoleLogger, fatalLine } from './lib/logger.js';
import { startOpsServer } from './lib/telemetry/ops-server.js';
import { startTracing } from './lib/telemetry/tracing.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  const logger = createConsoleLogger({ name: 'worker', level: config.logLevel, format: config.telemetry.logFormat });
  // The gpu role only with devices: CAPSTAN_GPUS, or GPUs found here (refused when asked for without either).
  const placed = placeRoles({ roles: config.workerRoles, explicit: config.workerRolesExplicit, ...(config.gpus ? { gpus: config.gpus } : {}) });
  if (placed.note) logger.warn(placed.note);
  // A worker serves metrics on its ops listener (CAPSTAN_OPS_LISTEN); the SDK's own exporter then
  // listens on a loopback port of its own, and the ops listener's /metrics appends its text.
  const t = config.telemetry;
  const sdkMetrics = t.opsListen ? await sdkMetricsEndpoint() : undefined;
  // Must run before any connection: drains workers on SIGINT/SIGTERM.
  TemporalRuntime.install({
    shutdownSignals: ['SIGINT', 'SIGTERM'],
    // The SDK's own lines (bundling, state changes) only from WARN up, unless debugging; written by
    // our logger (same format, run ids), the native core's lines too (forwarded instead of printed).
    logger: new DefaultLogger(
      config.logLevel === 'debug' ? 'DEBUG' : 'WARN',
      sdkLogFunction(createConsoleLogger({ name: 'temporal', level: config.logLevel, format: config.telemetry.logFormat })),
    ),
    telemetryOptions: {
      logging: { forward: {}, filter: { core: config.logLevel === 'debug' ? 'INFO' : 'WARN', other: 'ERROR' } },
      ...(sdkMetrics ? sdkTelemetryOptions(sdkMetrics) : {}),
    },
  });
  // Before the workers are created: they install Temporal's tracing interceptors when it runs.
  const tracing = await startTracing({ enabled: config.telemetry.tracing, defaultServiceName: 'capstan-worker', env: process.env });
  const telemetry = t.opsListen ? createWorkerTelemetry({ roles: placed.roles, ...(sdkMetrics ? { sdk: sdkMetrics } : {}), logger }) : undefined;
  const rt = await createRuntime(config, logger);
  const target = temporalTarget(process.env);
  const connection = await connectWorker(target);
  const workers = await createWorkers({
    connection,
    namespace: target.namespace,
    taskQueues: config.taskQueues,
    roles: placed.roles,
    activities: {
      stages: rt.stages,
      artifacts: rt.artifacts,
      services: rt.services,
      logger,
      meter: rt.meter,
      cache: rt.cache,
      records: rt.records,
      tokens: rt.tokens,
    },
    shutdownGraceTime: config.shutdownGrace,
    activitySlots: config.activitySlots,
    gpuSlots: config.gpuSlots,
    ...(placed.gpus ? { gpus: placed.gpus } : {}),
    slotLeaseMs: config.slotLeaseMs,
    slotRevokeAfterMs: config.slotRevokeAfterMs,
    // A worker of a stack killed on this folder left reports the keeper would count until their lease ends: withdrawn at start.
    slotRecordsDir: path.join(config.dataDir, 'workers'),
    ...(config.host ? { host: config.host, identity: `${process.pid}@${config.host}` } : {}),
    ...(telemetry ? { metrics: telemetry.metrics } : {}),
  });
  // The ops listener (CAPSTAN_OPS_LISTEN; nothing listens without it): /metrics, /livez and /readyz.
  // Ready turns false as the SDK drains the workers on SIGTERM/SIGINT.
  const health = workerHealth({ temporal: connection, db: rt.db, workers: () => workers, logger });
  const ops = t.opsListen
    ? await startOpsServer({
        listen: t.opsListen,
        ...(t.metricsToken ? { metricsToken: t.metricsToken } : {}),
        ...(telemetry ? { metrics: telemetry.render } : {}),
        live: health.live,
        ready: health.ready,
        logger,
      })
    : undefined;
  if (ops) logger.info(`ops listener on ${ops.url} (/metrics${t.metricsToken ? ', scrape token required' : ''}, /livez, /readyz)`);
  logger.info(
    `worker up: ${target.connectionOptions.address} namespace ${target.namespace}; serving ${placed.roles.join(', ')}${placed.gpus ? ` (devices ${placed.gpus.map((d) => `${d.kind}:${d.id}`).join(', ')} on ${config.host ?? hostname()})` : ''}; artifacts ${rt.artifacts.describe()}`,
    {
      plugins: rt.stages.list().map((p) => `${p.name}@${p.version}`),
    },
  );
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
  await ops?.close();
  health.stop();
  await connection.close();
  await rt.close();
  await tracing?.shutdown();
  logger.info('worker stopped');
}

main().catch((e) => {
  process.stderr.write(fatalLine({ name: 'worker', format: logFormatFromEnv(process.env), message: 'worker failed', error: e }));
  process.exit(1);
});
