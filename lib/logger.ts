import { logContext, type LogContext } from './telemetry/log-context.js';
import { activeSpanIds } from './telemetry/trace-context.js';

export interface Logger {
  debug(message: string, meta?: Record<string, unknown>): void;
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  error(message: string, meta?: Record<string, unknown>): void;
}

export const levels = ['debug', 'info', 'warn', 'error'] as const;
export type Level = (typeof levels)[number];

/**
 * `json`: one object per line, `{"time","level","logger","msg", ...meta, "run_id", "stage_id",
 * "attempt", …, "trace_id", "span_id"}`, what a log shipper joins on; `text`: a line for people.
 */
export type LogFormat = 'json' | 'text';

export interface ConsoleLoggerOptions {
  name: string;
  level?: Level;
  /** Default `text` (entry points pass config.telemetry.logFormat). */
  format?: LogFormat;
  /** Where lines go (default: stderr); each call gets one line with its newline. */
  write?: (line: string) => void;
}

/** A console logger, which can also log with a level chosen at run time and another time (relayed entries). */
export interface ConsoleLogger extends Logger {
  log(level: Level, message: string, meta?: Record<string, unknown>, time?: Date): void;
}

/**
 * A line-oriented logger for entry points; library code receives a Logger instead. Every line
 * carries the ids of the current log context (lib/telemetry/log-context.ts) and of the active
 * OpenTelemetry span, when there are any (JSON only; text lines stay as they were). Tokens are
 * redacted from messages and meta.
 */
export function createConsoleLogger(opts: ConsoleLoggerOptions): ConsoleLogger {
  const min = levels.indexOf(opts.level ?? 'info');
  const write = opts.write ?? ((line: string) => void process.stderr.write(line));
  const format = opts.format ?? 'text';
  // Stacks only when debugging: an error's message says what failed, its stack is for the developer.
  const stacks = min === 0;
  const log = (level: Level, message: string, meta?: Record<string, unknown>, time = new Date()) => {
    if (levels.indexOf(level) < min) return;
    const line =
      format === 'json' ? jsonLine({ time, level, name: opts.name, message, meta, stacks }) : textLine({ time, level, name: opts.name, message, meta, stacks });
    write(`${line}\n`);
  };
  return {
    log,
    debug: (m, meta) => log('debug', m, meta),
    info: (m, meta) => log('info', m, meta),
    warn: (m, meta) => log('warn', m, meta),
    error: (m, meta) => log('error', m, meta),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

interface LineParts {
  time: Date;
  level: Level;
  name: string;
  message: string;
  meta: Record<string, unknown> | undefined;
  stacks: boolean;
}

/** Today's text line: `<ISO time> LEVEL [name] message {meta as JSON}`. */
function textLine(p: LineParts): string {
  const meta = p.meta && Object.keys(p.meta).length ? ` ${stringify(cleanMeta(p.meta, p.stacks))}` : '';
  return `${p.time.toISOString()} ${p.level.toUpperCase().padEnd(5)} [${p.name}] ${redact(p.message)}${meta}`;
}

/** The fields of a JSON line that meta cannot replace (a meta key of that name is kept as `meta_<key>`). */
const RESERVED = new Set(['time', 'level', 'logger', 'msg']);

/** Context ids as JSON fields. */
const CONTEXT_FIELDS: [keyof LogContext, string][] = [
  ['runId', 'run_id'],
  ['stageId', 'stage_id'],
  ['attempt', 'attempt'],
  ['replica', 'replica'],
  ['plugin', 'plugin'],
  ['workflowId', 'workflow_id'],
  ['activityId', 'activity_id'],
  ['requestId', 'request_id'],
  ['operation', 'operation'],
];

/** The names of the id fields a JSON line may carry (context and trace). */
export const LOG_ID_FIELDS = [...CONTEXT_FIELDS.map(([, f]) => f), 'trace_id', 'span_id'];

function jsonLine(p: LineParts): string {
  const record: Record<string, unknown> = { time: p.time.toISOString(), level: p.level, logger: p.name, msg: redact(p.message) };
  if (p.meta) for (const [k, v] of Object.entries(cleanMeta(p.meta, p.stacks))) record[RESERVED.has(k) ? `meta_${k}` : k] = v;
  // Ids a line's meta names itself (a relayed child's line) are kept; the context fills in the rest.
  const ctx = logContext();
  for (const [key, field] of CONTEXT_FIELDS) if (ctx[key] !== undefined && record[field] === undefined) record[field] = ctx[key];
  const span = record.trace_id === undefined ? activeSpanIds() : undefined;
  if (span) {
    record.trace_id = span.traceId;
    record.span_id = span.spanId;
  }
  return stringify(record);
}

/** Meta ready to print: errors as their message (and stack when debugging), secrets redacted. */
function cleanMeta(meta: Record<string, unknown>, stacks: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(meta)) {
    if (v === undefined) continue;
    out[k] = SECRET_KEY.test(k) ? '[redacted]' : v instanceof Error ? errorFields(v, stacks) : typeof v === 'string' ? redact(v) : v;
  }
  return out;
}

/** An error as JSON: its message, name, code and failure type when they say more, the stack on request. */
export function errorFields(e: Error, stack: boolean): Record<string, unknown> {
  const { code, type } = e as { code?: unknown; type?: unknown };
  return {
    message: redact(e.message),
    ...(e.name && e.name !== 'Error' ? { name: e.name } : {}),
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    // A Temporal ApplicationFailure's type (ARTIFACT_CORRUPT, BUDGET_EXCEEDED, …).
    ...(typeof type === 'string' ? { type } : {}),
    ...(stack && e.stack ? { stack: redact(e.stack) } : {}),
  };
}

/** Meta keys whose values are never printed. (`tokenId`, a token's public id, is fine.) */
const SECRET_KEY = /^(token|authorization|password|secret|secretAccessKey|apiKey|accessToken|taskToken)$/i;
/** An API token (`cap_<public id>_<secret>`, auth/tokens.ts) or a bearer credential inside text. */
const TOKEN_IN_TEXT = /\bcap_([0-9a-f]{12})_[A-Za-z0-9_-]{43}\b/g;
const BEARER_IN_TEXT = /\b(Bearer\s+)[^\s"',;]+/gi;

/** The text with any API token's secret part and any bearer credential replaced. */
export function redact(s: string): string {
  if (!s.includes('cap_') && !/bearer/i.test(s)) return s;
  return s.replace(TOKEN_IN_TEXT, 'cap_$1_[redacted]').replace(BEARER_IN_TEXT, '$1[redacted]');
}

/** JSON that never throws: bigints as strings, a cycle as "[circular]". */
function stringify(v: unknown): string {
  const seen = new WeakSet<object>();
  return JSON.stringify(v, (_k, x: unknown) => {
    if (typeof x === 'bigint') return x.toString();
    if (x && typeof x === 'object') {
      if (seen.has(x)) return '[circular]';
      seen.add(x);
    }
    return x;
  });
}

/** One line of a JSON log (as createConsoleLogger writes them), read back. */
export interface ParsedLogLine {
  time?: string;
  level: Level;
  logger?: string;
  msg: string;
  /** Every other field (ids included). */
  fields: Record<string, unknown>;
}

/** A JSON log line read back; undefined for anything else (a library's own output, a stack trace). */
export function parseLogLine(line: string): ParsedLogLine | undefined {
  if (!line.startsWith('{')) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
  const { time, level, logger, msg, ...fields } = raw as Record<string, unknown>;
  if (typeof msg !== 'string' || !levels.includes(level as Level)) return undefined;
  return { level: level as Level, msg, fields, ...(typeof time === 'string' ? { time } : {}), ...(typeof logger === 'string' ? { logger } : {}) };
}

/**
 * Logs a line a child process wrote to its stderr: a JSON log line at its own level with its
 * fields (the child's logger name as `source`), anything else (a library's output) at `fallback`.
 * Called in the attempt's context, so the line carries the attempt's ids either way.
 */
export function relayLogLine(logger: Logger, line: string, fallback: Level = 'debug'): void {
  const p = parseLogLine(line);
  if (!p) {
    logger[fallback](line);
    return;
  }
  // The ids the current context gives anyway are not repeated as the line's own fields (they would be
  // meta in text lines, and numbers among a line's measurements).
  const ctx = logContext();
  const fields = Object.fromEntries(Object.entries(p.fields).filter(([k]) => !CONTEXT_FIELDS.some(([key, field]) => field === k && ctx[key] !== undefined)));
  logger[p.level](p.msg, { ...(p.logger ? { source: p.logger } : {}), ...fields });
}

/** What a child's stderr line says, for an error message: a JSON line's message (and its error's), else the line. */
export function readableLogLine(line: string): string {
  const p = parseLogLine(line);
  if (!p) return line;
  const err = p.fields.error;
  const detail = err && typeof err === 'object' ? ((err as { stack?: unknown }).stack ?? (err as { message?: unknown }).message) : err;
  return typeof detail === 'string' ? `${p.msg}: ${detail}` : p.msg;
}

/**
 * An entry point's last line before it exits on an error: today's `<what>: <stack>` as text, or a
 * JSON line at error level with the error's message and stack.
 */
export function fatalLine(o: { name: string; format: LogFormat; message: string; error: unknown }): string {
  const e = o.error instanceof Error ? o.error : new Error(String(o.error));
  if (o.format === 'text') return `${o.message}: ${redact(e.stack ?? e.message)}\n`;
  let line = '';
  createConsoleLogger({ name: o.name, level: 'debug', format: 'json', write: (l) => void (line = l) }).error(o.message, { error: e });
  return line;
}
