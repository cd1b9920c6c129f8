/**
 * A data file that cannot be used as it is (corrupt, mismatched, out of range). `code` is a
 * stable SCREAMING_SNAKE type; `file` names the offending file. Plugins turn it into a
 * non-retryable StageError.
 */
export class DataError extends Error {
  readonly code: string;
  readonly file?: string;
  constructor(message: string, opts: { code: string; file?: string }) {
    super(opts.file ? `${opts.file}: ${message}` : message);
    this.name = 'DataError';
    this.code = opts.code;
    if (opts.file !== undefined) this.file = opts.file;
  }
}
