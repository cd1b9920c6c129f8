// Liveness and readiness: what /livez and /readyz answer (lib/telemetry/ops-server.ts serves them).
//
// Readiness tells a load balancer or an orchestrator whether to send this process work: false while a
// dependency it needs (Temporal, the database) does not answer, or while it drains. Liveness tells
// an orchestrator whether to restart it: only whether the process itself is stuck — never a
// dependency, since restarting every process because Temporal or the database is down makes the
// outage worse (cold starts, reconnect storms) and cures nothing.
//
// Every dependency check is cached (~1 s) and shares one call in flight, so probes, however many and
// however often, cannot hammer a dependency; and each has its own timeout, so /readyz always answers
// within about that timeout even when a dependency hangs.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Db } from '../db/types.js';
import type { Logger } from '../logger.js';
import type { HealthCheck, HealthReport } from './ops-server.js';

/** One named check a report is made of. */
export interface Check {
  name: string;
  get(): Promise<HealthCheck>;
}

export interface CachedCheckOptions {
  name: string;
  /**
   * The probe itself: resolves when the dependency answers (optionally with a short note), rejects
   * (or resolves `{ ok: false }`) when it does not. It should give up by itself near `timeoutMs`;
   * the check stops waiting for it at `timeoutMs` regardless.
   */
  probe: () => Promise<HealthCheck | string | undefined>;
  /** Longest wait for the probe (default 2 s): past it the check is not ok. */
  timeoutMs?: number;
  /** How long a result is reused (default 1 s). */
  cacheMs?: number;
  /** A failure's reason for the answer: short, no addresses, paths or secrets (the full error goes to the log). */
  reason?: (error: unknown) => string;
  /** Where a change of state (ok ↔ not) is logged, with the full error. */
  logger?: Logger;
}

export const DEFAULT_CHECK_TIMEOUT_MS = 2_000;
export const DEFAULT_CHECK_CACHE_MS = 1_000;

/**
 * A check whose result is reused for `cacheMs` after it settles, with one probe in flight at a
 * time (callers during a probe share it) and a timeout, so a hung dependency cannot hold /readyz.
 */
export function cachedCheck(o: CachedCheckOptions): Check {
  const timeoutMs = o.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;
  const cacheMs = o.cacheMs ?? DEFAULT_CHECK_CACHE_MS;
  const reason = o.reason ?? shortReason;
  let last: { at: number; result: HealthCheck } | undefined;
  /** The probe in flight (and the answer callers share): a hung one is joined, not stacked, until it is a while past its timeout. */
  let pending: { since: number; answer: Promise<HealthCheck> } | undefined;
  let wasOk: boolean | undefined;
  const noteChange = (r: HealthCheck, failure: unknown) => {
    if (wasOk === r.ok) return;
    const first = wasOk === undefined;
    wasOk = r.ok;
    if (r.ok && !first) o.logger?.info(`health: ${o.name} answers again`);
    if (!r.ok)
      o.logger?.warn(
        `health: ${o.name} is not ok: ${r.detail ?? ''}`,
        failure === undefined ? {} : { error: failure instanceof Error ? failure.message : String(failure) },
      );
  };
  const start = (): Promise<HealthCheck> => {
    let failure: unknown;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<HealthCheck>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, detail: `no answer within ${formatMs(timeoutMs)}` }), timeoutMs);
      timer.unref();
    });
    let probed: Promise<HealthCheck>;
    try {
      probed = o.probe().then(
        (r): HealthCheck => (typeof r === 'string' ? { ok: true, detail: r } : (r ?? { ok: true })),
        (e: unknown): HealthCheck => {
          failure = e;
          return { ok: false, detail: reason(e) };
        },
      );
    } catch (e) {
      failure = e;
      probed = Promise.resolve({ ok: false, detail: reason(e) });
    }
    const mine = {
      since: Date.now(),
      answer: Promise.race([probed, timedOut]).then((result) => {
        clearTimeout(timer);
        last = { at: Date.now(), result };
        noteChange(result, failure);
        return result;
      }),
    };
    void probed.finally(() => {
      if (pending === mine) pending = undefined;
    });
    pending = mine;
    return mine.answer;
  };
  return {
    name: o.name,
    async get() {
      if (last && Date.now() - last.at < cacheMs) return last.result;
      if (pending && Date.now() - pending.since < Math.max(5 * timeoutMs, 10_000)) return pending.answer;
      return start();
    },
  };
}

/** A check with no I/O, evaluated on every request (e.g. draining). */
export function instantCheck(name: string, fn: () => HealthCheck): Check {
  return { name, get: async () => fn() };
}

/** Not ok while the process drains (after SIGTERM/SIGINT, before it closes). */
export function drainingCheck(draining: () => boolean): Check {
  return instantCheck('draining', () => (draining() ? { ok: false, detail: 'shutting down' } : { ok: true }));
}

/** The database answers `select 1` (through lib/db: SQLite or PostgreSQL). */
export function dbCheck(db: Db, o: { timeoutMs?: number; cacheMs?: number; logger?: Logger } = {}): Check {
  return cachedCheck({
    name: 'db',
    ...o,
    probe: async () => {
      await db.query('select 1');
      return db.dialect;
    },
  });
}

export interface EventLoopCheckOptions {
  /** Not live when the event loop's mean delay over the last window is above this (default 5 s). */
  maxDelayMs?: number;
  /** How long each measured window is (default 10 s). */
  windowMs?: number;
}

/**
 * Liveness of the process itself: its event loop keeps turning. A loop blocked outright already
 * fails the probe (nothing answers it); this also catches a loop so starved that timers, heartbeats
 * and requests wait seconds each, which a restart can cure. Call stop() on shutdown.
 */
export function eventLoopCheck(o: EventLoopCheckOptions = {}): Check & { stop(): void } {
  const maxDelayMs = o.maxDelayMs ?? 5_000;
  const windowMs = o.windowMs ?? 10_000;
  const h = monitorEventLoopDelay({ resolution: 20 });
  h.enable();
  let lastWindowMeanMs = 0;
  const timer = setInterval(() => {
    lastWindowMeanMs = h.count ? h.mean / 1e6 : 0;
    h.reset();
  }, windowMs);
  timer.unref();
  return {
    name: 'event_loop',
    async get() {
      // The current window counts too once it has samples: a loop that has just become slow shows before the window ends.
      const nowMs = h.count ? h.mean / 1e6 : 0;
      const delay = Math.max(lastWindowMeanMs, nowMs);
      return delay > maxDelayMs ? { ok: false, detail: `event loop delayed ${Math.round(delay)} ms on average (bound ${maxDelayMs} ms)` } : { ok: true };
    },
    stop() {
      clearInterval(timer);
      h.disable();
    },
  };
}

/** A report over checks, run concurrently: ok when every check is. */
export function healthReport(checks: Check[]): () => Promise<HealthReport> {
  return async () => {
    const results = await Promise.all(
      checks.map(async (c): Promise<[string, HealthCheck]> => {
        try {
          return [c.name, await c.get()];
        } catch (e) {
          return [c.name, { ok: false, detail: shortReason(e) }];
        }
      }),
    );
    return { ok: results.every(([, r]) => r.ok), checks: Object.fromEntries(results) };
  };
}

/** The live and ready providers of one process (what startOpsServer and the API's port serve). */
export interface HealthProviders {
  live: () => Promise<HealthReport>;
  ready: () => Promise<HealthReport>;
}

/**
 * A failure as a short reason fit for an unauthenticated answer: a Node or gRPC error code when
 * there is one (ECONNREFUSED, UNAVAILABLE), never the message (which may name hosts, paths or users).
 */
export function shortReason(e: unknown): string {
  const x = e as { code?: unknown; name?: unknown } | undefined;
  if (x && typeof x.code === 'string' && /^[A-Z0-9_]{2,40}$/.test(x.code)) return `unreachable (${x.code})`;
  if (x && typeof x.code === 'number' && GRPC_CODES[x.code]) return `unreachable (${GRPC_CODES[x.code]})`;
  if (x && typeof x.name === 'string' && /^[A-Za-z]{2,40}$/.test(x.name) && x.name !== 'Error') return `failed (${x.name})`;
  return 'failed';
}

const GRPC_CODES: Record<number, string> = {
  1: 'CANCELLED',
  2: 'UNKNOWN',
  4: 'DEADLINE_EXCEEDED',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  16: 'UNAUTHENTICATED',
};

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
