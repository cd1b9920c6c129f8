export interface Logger {
  debug(message: string, meta?: Record<string, unknown>): void;
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  error(message: string, meta?: Record<string, unknown>): void;
}

const levels = ['debug', 'info', 'warn', 'error'] as const;
type Level = (typeof levels)[number];

/** A line-oriented logger for entry points; library code receives a Logger instead. */
export function createConsoleLogger(opts: { name: string; level?: Level }): Logger {
  const min = levels.indexOf(opts.level ?? 'info');
  const emit = (level: Level) => (message: string, meta?: Record<string, unknown>) => {
    if (levels.indexOf(level) < min) return;
    const extra = meta && Object.keys(meta).length ? ' ' + JSON.stringify(meta) : '';
    process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} [${opts.name}] ${message}${extra}\n`);
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
