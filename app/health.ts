// What /livez and /readyz check in the API and in a worker (lib/telemetry/health.ts has the machinery;
// this file knows Temporal). Each entry point wires them with one call: apiHealth(...) / workerHealth(...).
import type { HealthService, WorkflowService } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import { cachedCheck, dbCheck, drainingCheck, eventLoopCheck, healthReport, instantCheck, type Check, type HealthProviders } from '../lib/telemetry/health.js';

/** What the Temporal check needs of a connection: the client's Connection and the worker's NativeConnection both fit. */
export interface TemporalHealthConnection {
  healthService: HealthService;
  workflowService: Pick<WorkflowService, 'getSystemInfo'>;
  withDeadline<R>(deadline: number | Date, fn: () => Promise<R>): Promise<R>;
}

/** The service the frontend reports in gRPC's standard health protocol. */
const WORKFLOW_SERVICE = 'temporal.api.workflowservice.v1.WorkflowService';
/** grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING */
const SERVING = 1;

export interface CheckTimings {
  /** Each check's own timeout (default 2 s). */
  timeoutMs?: number;
  /** How long a check's result is reused (default 1 s). */
  cacheMs?: number;
}

/** gRPC's UNIMPLEMENTED status code. */
const UNIMPLEMENTED = 12;

/**
 * Temporal's frontend answers gRPC's health check (one small RPC, under a deadline) with SERVING.
 * A server that does not implement the health service is asked GetSystemInfo instead (what every
 * SDK asks when it connects). The connection's own retries are cut off by the deadline, so an
 * outage shows within the timeout.
 */
export function temporalCheck(connection: TemporalHealthConnection, o: CheckTimings & { logger?: Logger } = {}): Check {
  const timeoutMs = o.timeoutMs ?? 2_000;
  let healthServiceMissing = false;
  const within = <R>(fn: () => Promise<R>) => connection.withDeadline(Date.now() + timeoutMs, fn);
  return cachedCheck({
    name: 'temporal',
    ...o,
    probe: async () => {
      if (!healthServiceMissing) {
        try {
          const r = await within(() => connection.healthService.check({ service: WORKFLOW_SERVICE }));
          if (r.status !== SERVING) return { ok: false, detail: `frontend not serving (status ${String(r.status)})` };
          return;
        } catch (e) {
          if ((e as { code?: unknown }).code !== UNIMPLEMENTED) throw e;
          healthServiceMissing = true;
        }
      }
      await within(() => connection.workflowService.getSystemInfo({}));
    },
  });
}

/** This process's Temporal workers all poll (RUNNING); not while they start, drain, stop or have failed. */
export function workersCheck(workers: () => readonly Worker[]): Check {
  return instantCheck('workers', () => {
    const ws = workers();
    if (!ws.length) return { ok: false, detail: 'no workers' };
    const states = ws.map((w) => w.getState());
    const off = states.filter((s) => s !== 'RUNNING');
    return off.length
      ? { ok: false, detail: `${off.length} of ${ws.length} not running (${[...new Set(off)].join(', ').toLowerCase()})` }
      : { ok: true, detail: `${ws.length} running` };
  });
}

export interface ApiHealthOptions extends CheckTimings {
  /** The API's Temporal connection (the client's). */
  temporal: TemporalHealthConnection;
  db: Db;
  logger?: Logger;
  /** Bound on the event loop's mean delay for /livez (default 5 s). */
  maxEventLoopDelayMs?: number;
}

/** /livez and /readyz of a process, plus drain() (the API's readiness false from then on) and stop() (ends the event-loop monitor). */
export interface ProcessHealth extends HealthProviders {
  drain(): void;
  readonly draining: boolean;
  stop(): void;
}

/** The API's health: ready while Temporal and the database answer and it is not draining (drain() on SIGTERM/SIGINT). */
export function apiHealth(o: ApiHealthOptions): ProcessHealth {
  return processHealth(o, [temporalCheck(o.temporal, o), dbCheck(o.db, o)]);
}

export interface WorkerHealthOptions extends ApiHealthOptions {
  /** The worker's Temporal connection (its NativeConnection). */
  temporal: TemporalHealthConnection;
  /** The process's Temporal workers (a function: a test stack replaces them). */
  workers: () => readonly Worker[];
}

/**
 * A worker's health: ready while Temporal and the database answer and every one of its Temporal
 * workers is RUNNING (not after SIGTERM/SIGINT, when the SDK drains them, nor after one failed).
 */
export function workerHealth(o: WorkerHealthOptions): HealthProviders & { stop(): void } {
  // Its drain is the SDK's (it stops the workers on SIGTERM/SIGINT): the workers check shows it, no separate draining check.
  return processHealth(o, [temporalCheck(o.temporal, o), dbCheck(o.db, o)], { own: [workersCheck(o.workers)], drainCheck: false });
}

function processHealth(o: { maxEventLoopDelayMs?: number }, dependencies: Check[], p: { own?: Check[]; drainCheck?: boolean } = {}): ProcessHealth {
  let draining = false;
  const loop = eventLoopCheck(o.maxEventLoopDelayMs !== undefined ? { maxDelayMs: o.maxEventLoopDelayMs } : {});
  return {
    live: healthReport([loop]),
    ready: healthReport([...(p.drainCheck === false ? [] : [drainingCheck(() => draining)]), ...(p.own ?? []), ...dependencies]),
    drain() {
      draining = true;
    },
    get draining() {
      return draining;
    },
    stop: () => loop.stop(),
  };
}
