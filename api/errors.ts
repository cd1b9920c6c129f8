import { createGraphQLError } from 'graphql-yoga';
import type { SpecIssue } from '../plugins/spec.js';

/**
 * Expected errors carry a stable extensions.code; anything else is masked by yoga.
 * Built with yoga's own factory so the error class is the one yoga checks (graphql ships
 * both CJS and ESM builds, and an error from the other copy would be masked).
 */
export function apiError(code: string, message: string, extra: Record<string, unknown> = {}) {
  return createGraphQLError(message, { extensions: { code, ...extra } });
}

export const specInvalid = (issues: SpecIssue[]) =>
  apiError('SPEC_INVALID', `pipeline spec is invalid: ${issues.map((i) => `${i.path || '(spec)'}: ${i.message}`).join('; ')}`, { issues });

export const notFound = (what: string) => apiError('NOT_FOUND', `${what} not found`);
