/**
 * An error a stage throws on purpose. `retryable: false` (the default for bad input and bad data)
 * tells Temporal not to try again; `type` is a stable SCREAMING_SNAKE code.
 */
export class StageError extends Error {
  readonly type: string;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;
  constructor(message: string, opts: { type: string; retryable?: boolean; details?: Record<string, unknown> }) {
    super(message);
    this.name = 'StageError';
    this.type = opts.type;
    this.retryable = opts.retryable ?? false;
    if (opts.details) this.details = opts.details;
  }
}

/** Bad params, bad data, a corrupt file: retrying will not help. */
export function badInput(message: string, type = 'BAD_INPUT', details?: Record<string, unknown>): StageError {
  return new StageError(message, { type, retryable: false, ...(details ? { details } : {}) });
}
