/** Marks a StageError from any copy of this module (Symbol.for is shared by every copy). */
const STAGE_ERROR = Symbol.for('capstan.StageError');

/**
 * An error a stage throws on purpose. `retryable: false` (the default for bad input and bad data)
 * tells Temporal not to try again; `type` is a stable SCREAMING_SNAKE code.
 * `instanceof StageError` also holds for one thrown by a plugin compiled against its own copy of
 * `capstan/plugin`, whose class is not the host's.
 */
export class StageError extends Error {
  static override [Symbol.hasInstance](value: unknown): value is StageError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[STAGE_ERROR] === true;
  }

  readonly type: string;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;
  constructor(message: string, opts: { type: string; retryable?: boolean; details?: Record<string, unknown> }) {
    super(message);
    Object.defineProperty(this, STAGE_ERROR, { value: true });
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
