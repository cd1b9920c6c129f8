/**
 * An expected failure of an engine operation, with a stable SCREAMING_SNAKE code clients can
 * branch on (NOT_FOUND, DECISION_REJECTED, RUN_CLOSED, …). The API turns it into a GraphQL error
 * with `extensions.code` in one place (api/errors.ts); anything else is masked there.
 * Spec problems are thrown as `SpecValidationError` (plugins/spec.ts), which carries every issue.
 */
export class EngineError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export const notFound = (what: string) => new EngineError('NOT_FOUND', `${what} not found`);
