// What a log line is about (the run, stage and attempt; the API request): kept in an
// AsyncLocalStorage, so every line logged while a stage attempt or a request is handled carries
// its ids without each call site passing them. The console logger reads it (lib/logger.ts).
import { AsyncLocalStorage } from 'node:async_hooks';

/** The ids a line carries when known; each becomes a snake_case field of a JSON line (runId → run_id). */
export interface LogContext {
  /** Capstan's run id (the pipeline workflow's id, `pipeline/<name>/<id>`). */
  runId?: string;
  stageId?: string;
  /** Temporal's attempt number of the stage's activity (1 for the first). */
  attempt?: number;
  /** The replica of a data-parallel stage. */
  replica?: number;
  plugin?: string;
  /** Temporal's workflow id when it is not a run (a schedule, the slot keeper). */
  workflowId?: string;
  activityId?: string;
  /** The API request's id (X-Request-Id, or one made for it). */
  requestId?: string;
  /** The GraphQL operation (its name, or its first root field when unnamed). */
  operation?: string;
}

/** The environment variable that hands the context to a child process (JSON of a LogContext). */
export const LOG_CONTEXT_ENV = 'CAPSTAN_LOG_CONTEXT';

const storage = new AsyncLocalStorage<LogContext>();

/** Runs `fn` with `ctx` added to the current context (an inner value wins); what `fn` starts inherits it. */
export function withLogContext<T>(ctx: LogContext, fn: () => T): T {
  return storage.run({ ...storage.getStore(), ...defined(ctx) }, fn);
}

/** The current context (empty outside any). */
export function logContext(): LogContext {
  return storage.getStore() ?? {};
}

/**
 * Adds ids to the current context once they are known (the GraphQL operation after parsing, a
 * run id from its variables). Visible to what runs in this context from now on, and not outside
 * it; a no-op outside any context.
 */
export function addLogContext(ctx: LogContext): void {
  const store = storage.getStore();
  if (store) Object.assign(store, defined(ctx));
}

/** The current context for a child process's environment (nothing when there is none). */
export function logContextEnv(): Record<string, string> {
  const ctx = logContext();
  return Object.keys(ctx).length ? { [LOG_CONTEXT_ENV]: JSON.stringify(ctx) } : {};
}

/** The context a parent handed down in `CAPSTAN_LOG_CONTEXT`; fields of the wrong type are dropped, bad JSON gives none. */
export function logContextFromEnv(value: string | undefined): LogContext {
  if (!value) return {};
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    return {};
  }
  if (!raw || typeof raw !== 'object') return {};
  const r = raw as Record<string, unknown>;
  const out: LogContext = {};
  for (const k of ['runId', 'stageId', 'plugin', 'workflowId', 'activityId', 'requestId', 'operation'] as const)
    if (typeof r[k] === 'string') out[k] = r[k] as string;
  for (const k of ['attempt', 'replica'] as const) if (typeof r[k] === 'number' && Number.isFinite(r[k])) out[k] = r[k] as number;
  return out;
}

function defined(ctx: LogContext): LogContext {
  return Object.fromEntries(Object.entries(ctx).filter(([, v]) => v !== undefined)) as LogContext;
}
