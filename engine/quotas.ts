import { ScheduleNotFoundError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { StartedByKey } from '../workflows/search-attributes.js';
import { EngineError } from './errors.js';
import { runsQuery, visibilityString } from './run-list.js';
import { SCHEDULE_PREFIX } from './schedules.js';

/**
 * What one principal (an API token, by its public id) may hold at once. Admins are bound too: a
 * leaked admin token or a runaway script is exactly what a quota is for, and an admin can raise
 * the settings. Runs started by the host itself (no token: ROI-watch events) are not counted.
 */
export interface QuotaSettings {
  /** Open runs (running or paused) started by one token (CAPSTAN_MAX_CONCURRENT_RUNS). */
  maxConcurrentRuns: number;
  /** Schedules (paused or not) created by one token (CAPSTAN_MAX_SCHEDULES). */
  maxSchedules: number;
  /** Shortest time between two firings of a schedule (CAPSTAN_MIN_SCHEDULE_INTERVAL). */
  minScheduleIntervalMs: number;
}

export const DEFAULT_QUOTAS: QuotaSettings = { maxConcurrentRuns: 20, maxSchedules: 20, minScheduleIntervalMs: 60_000 };

/** What `Retry-After` says on a quota breach: a hint, since when a run closes is not known. */
export const QUOTA_RETRY_AFTER_SECONDS = 60;

/** A quota breach: the API answers 429 with Retry-After (api/errors.ts); nothing was started. */
export function quotaExceeded(message: string): EngineError {
  return new EngineError('QUOTA_EXCEEDED', message, { retryAfter: QUOTA_RETRY_AFTER_SECONDS });
}

/** The token id a quota is kept for; none for runs without a token and with auth off ('-'), which have no principal to bound. */
export function quotaKey(starter: { tokenId?: string } | undefined): string | undefined {
  const id = starter?.tokenId;
  return id && id !== '-' ? id : undefined;
}

/**
 * Runs async work one at a time per key in this process, so two starts by the same token cannot
 * both pass a count that each of them is about to raise.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    const mine = before.then(fn, fn);
    const tail = mine.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await mine;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/**
 * Ids this process started or created recently, per token. Temporal's visibility (what counts runs
 * and lists schedules) is eventually consistent: a run started a moment ago may not be listed yet,
 * so these are checked one by one (describe is consistent) until visibility lists them.
 */
export class RecentIds {
  private readonly byKey = new Map<string, Map<string, number>>();

  constructor(private readonly keepMs = 5 * 60_000) {}

  add(key: string, id: string): void {
    let m = this.byKey.get(key);
    if (!m) this.byKey.set(key, (m = new Map()));
    m.set(id, Date.now());
  }

  /** Recent ids of a key (forgetting those older than keepMs). */
  of(key: string): string[] {
    const m = this.byKey.get(key);
    if (!m) return [];
    const cutoff = Date.now() - this.keepMs;
    for (const [id, at] of m) if (at < cutoff) m.delete(id);
    return [...m.keys()];
  }

  forget(key: string, id: string): void {
    this.byKey.get(key)?.delete(id);
  }
}

/** The visibility query for a token's open runs. */
export function openRunsQuery(tokenId: string): string {
  return `${runsQuery({})} AND ${StartedByKey.name} = ${visibilityString(tokenId)} AND ExecutionStatus = 'Running'`;
}

/**
 * How many open runs a token has started, exact when it reaches `limit`: visibility lags both ways
 * (a run started a moment ago missing, a run just closed still listed as running), so below the
 * limit the listing plus this process's recent starts is enough to allow, and at the limit each
 * candidate is described before refusing.
 */
export async function countOpenRuns(client: Client, tokenId: string, recent: RecentIds, limit: number): Promise<number> {
  const candidates = new Set<string>(recent.of(tokenId));
  for await (const w of client.workflow.list({ query: openRunsQuery(tokenId), pageSize: Math.min(1000, limit + 1) })) {
    candidates.add(w.workflowId);
    recent.forget(tokenId, w.workflowId);
  }
  if (candidates.size < limit) return candidates.size;
  let open = 0;
  for (const id of candidates) {
    try {
      const d = await client.workflow.getHandle(id).describe();
      if (d.status.name === 'RUNNING') open++;
      else recent.forget(tokenId, id);
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) recent.forget(tokenId, id);
      else throw e;
    }
  }
  return open;
}

/**
 * How many of Capstan's schedules a token has created (paused ones included). The listing lags
 * both ways (a new schedule missing, a deleted one still there), so each candidate is described.
 */
export async function countSchedules(client: Client, tokenId: string, recent: RecentIds): Promise<number> {
  const candidates = new Set<string>(recent.of(tokenId));
  for await (const s of client.schedule.list()) {
    if (s.scheduleId.startsWith(SCHEDULE_PREFIX) && s.memo?.createdBy === tokenId) {
      candidates.add(s.scheduleId);
      recent.forget(tokenId, s.scheduleId);
    }
  }
  let n = 0;
  for (const id of candidates) {
    try {
      await client.schedule.getHandle(id).describe();
      n++;
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) recent.forget(tokenId, id);
      else throw e;
    }
  }
  return n;
}

/** The shortest gap between consecutive firing times (Infinity with fewer than two). */
export function shortestGapMs(times: Date[]): number {
  const t = times.map((d) => d.getTime()).sort((a, b) => a - b);
  let min = Infinity;
  for (let i = 1; i < t.length; i++) min = Math.min(min, t[i]! - t[i - 1]!);
  return min;
}
