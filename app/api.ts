import type { Client, Connection } from '@temporalio/client';
import { createApi, type Api } from '../api/app.js';
import { Engine } from '../engine/index.js';
import { loadTf } from '../ml/backend.js';
import { createModelServer } from '../serving/model-server.js';
import { parseDurationMs } from '../lib/duration.js';
import { createMetricsRegistry, renderMetrics } from '../lib/telemetry/metrics.js';
import type { MetricsText } from '../lib/telemetry/ops-server.js';
import { createApiMetrics } from './api-metrics.js';
import type { Runtime } from './runtime.js';
import { connectClient, ensureSearchAttributes, temporalTarget } from './temporal.js';

export interface ApiAppOptions {
  client: Client;
  namespace: string;
  temporalUiUrl?: string;
  /** Address of a trace in a trace UI, with `{traceId}` (CAPSTAN_TRACE_UI_URL). */
  traceUiUrl?: string;
  /** How often the model server re-reads the `production` alias (default 5 s). */
  modelRefreshMs?: number;
  /** How often watched deployments' realised ROI is judged (default 60 s; 0: only on checkRoiWatches). */
  roiWatchEveryMs?: number;
  /** Prometheus metrics (config.telemetry.metrics): a registry of this API's own; scrape-time reads cached for `cacheMs` (default 5 s). */
  metrics?: { cacheMs?: number };
}

/** The API process's parts. */
export interface ApiApp {
  api: Api;
  engine: Engine;
  /** /metrics' text (Prometheus format); absent when metrics are off. */
  metrics?: () => Promise<MetricsText>;
  close(): Promise<void>;
}

/** The API process's parts over a runtime: the engine, the model server (predictions booked in the ledger) and the API. */
export function createApiApp(rt: Runtime, o: ApiAppOptions): ApiApp {
  const registry = o.metrics ? createMetricsRegistry() : undefined;
  const measured = registry
    ? createApiMetrics({
        registry,
        client: o.client,
        taskQueues: rt.config.taskQueues,
        db: rt.db,
        logger: rt.logger,
        ...(o.metrics?.cacheMs !== undefined ? { cacheMs: o.metrics.cacheMs } : {}),
      })
    : undefined;
  const engine = new Engine({
    client: o.client,
    namespace: o.namespace,
    taskQueues: rt.config.taskQueues,
    stages: rt.stages,
    artifacts: rt.artifacts,
    db: rt.db,
    logger: rt.logger,
    priceSheet: rt.ledger.priceSheet,
    quotas: rt.config.quotas,
    tokens: rt.tokens,
    gang: rt.config.gang,
    ...(o.temporalUiUrl ? { temporalUiUrl: o.temporalUiUrl } : {}),
    ...(o.traceUiUrl ? { traceUiUrl: o.traceUiUrl } : {}),
  });
  const modelServer = createModelServer({
    registry: rt.models,
    artifacts: rt.artifacts,
    logger: rt.logger,
    loadTf: () => loadTf(rt.config.tfBackend ? { prefer: rt.config.tfBackend } : {}),
    onnx: rt.config.onnx,
    refreshIntervalMs: o.modelRefreshMs ?? 5_000,
    maxLoaded: rt.config.modelCacheSize,
    // Written durably to the outbox before the prediction is answered; booked from there.
    onPredictions: (model, version, count) => rt.outbox.recordPredictions(model, version, count),
    ...(measured ? { onPredicted: measured.predicted } : {}),
  });
  const c = rt.config.api;
  const api = createApi({
    engine,
    db: rt.db,
    models: rt.models,
    modelServer,
    tokens: rt.tokens,
    auth: c.auth === 'off' ? { kind: 'off' } : { kind: 'tokens', tokens: rt.tokens },
    http: {
      // The bound address itself is a name clients may use (unless it is a wildcard).
      allowedHosts: [...c.allowedHosts, ...(['0.0.0.0', '::'].includes(c.host) ? [] : [c.host.toLowerCase()])],
      corsOrigins: c.corsOrigins,
      maxSubscriptionsPerToken: c.maxSubscriptionsPerToken,
      streamIdleMs: c.streamIdleMs,
      trustedProxies: c.trustedProxies,
      predictRate: c.predictRate,
    },
    logger: rt.logger,
    dataRoots: rt.config.dataRoots,
    ...(registry ? { graphqlMetrics: registry } : {}),
  });
  // The realised-ROI watch: each new crossing emits roi.below once (engine.checkRoiWatches).
  const everyMs = o.roiWatchEveryMs ?? 60_000;
  let checking = false;
  const watch =
    everyMs > 0
      ? setInterval(() => {
          if (checking) return;
          checking = true;
          engine.money
            .checkRoiWatches()
            .catch((e: unknown) => rt.logger.warn('realised-ROI check failed; tried again at the next interval', { error: (e as Error).message }))
            .finally(() => (checking = false));
        }, everyMs)
      : undefined;
  watch?.unref();
  return {
    api,
    engine,
    ...(registry ? { metrics: () => renderMetrics(registry, { logger: rt.logger }) } : {}),
    close: async () => {
      if (watch) clearInterval(watch);
      await modelServer.close();
    },
  };
}

/**
 * The API process's parts connected to Temporal through the standard TEMPORAL_* environment
 * (registering Capstan's search attributes when the namespace lacks them).
 */
export async function connectApiApp(
  rt: Runtime,
  env: NodeJS.ProcessEnv,
): Promise<{ api: Api; connection: Connection; metrics?: () => Promise<MetricsText>; close(): Promise<void> }> {
  const target = temporalTarget(env);
  const { client, connection } = await connectClient(target);
  const added = await ensureSearchAttributes(connection, target.namespace);
  if (added.length) rt.logger.info(`registered search attributes ${added.join(', ')}`);
  const app = createApiApp(rt, {
    client,
    namespace: target.namespace,
    ...(rt.config.temporalUiUrl ? { temporalUiUrl: rt.config.temporalUiUrl } : {}),
    ...(rt.config.telemetry.traceUiUrl ? { traceUiUrl: rt.config.telemetry.traceUiUrl } : {}),
    ...(roiWatchEveryMs(env) !== undefined ? { roiWatchEveryMs: roiWatchEveryMs(env)! } : {}),
    ...(rt.config.telemetry.metrics ? { metrics: {} } : {}),
  });
  return {
    api: app.api,
    // The health check's (app/health.ts).
    connection,
    ...(app.metrics ? { metrics: app.metrics } : {}),
    async close() {
      await app.close();
      await connection.close();
    },
  };
}

/** CAPSTAN_ROI_WATCH_EVERY: a duration ("30s", "5m") or 0 to check only on request. */
function roiWatchEveryMs(env: NodeJS.ProcessEnv): number | undefined {
  const v = env.CAPSTAN_ROI_WATCH_EVERY;
  if (v === undefined || v.trim() === '') return undefined;
  const ms = v.trim() === '0' ? 0 : parseDurationMs(v.trim());
  if (ms === undefined || (ms > 0 && ms < 1000))
    throw new Error(`bad configuration in the environment:\n  CAPSTAN_ROI_WATCH_EVERY=${v}: expected a duration of at least 1s (e.g. "60s") or 0`);
  return ms;
}
