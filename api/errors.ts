import type { GraphQLError } from 'graphql';
import { createGraphQLError, maskError } from 'graphql-yoga';
import { TokenError } from '../auth/tokens.js';
import { EngineError } from '../engine/index.js';
import { AuthError } from './auth.js';
import { SpecValidationError } from '../engine/spec.js';
import { RegistryError } from '../serving/registry.js';
import { ServingError } from '../serving/model-server.js';

/**
 * Expected errors carry a stable extensions.code; anything else is masked by yoga.
 * Built with yoga's own factory so the error class is the one yoga checks (graphql ships
 * both CJS and ESM builds, and an error from the other copy would be masked).
 */
export function apiError(code: string, message: string, extra: Record<string, unknown> = {}) {
  return createGraphQLError(message, { extensions: { code, ...extra } });
}

/** The code and message a client sees for an expected failure of the layers below; undefined otherwise. */
export function expectedError(e: unknown): { code: string; message: string; extensions: Record<string, unknown> } | undefined {
  if (e instanceof EngineError) return { code: e.code, message: e.message, extensions: e.extensions };
  if (e instanceof SpecValidationError) {
    return {
      code: 'SPEC_INVALID',
      message: `pipeline spec is invalid: ${e.issues.map((i) => `${i.path || '(spec)'}: ${i.message}`).join('; ')}`,
      extensions: { issues: e.issues },
    };
  }
  if (e instanceof ServingError || e instanceof RegistryError || e instanceof AuthError || e instanceof TokenError) return { code: e.code, message: e.message, extensions: {} };
  return undefined;
}

/**
 * Codes answered with an HTTP status other than GraphQL's usual 200, with `Retry-After` from the
 * error's `retryAfter` (seconds). yoga sets the response's status from `extensions.http` (the
 * highest among the errors) and strips `http` from what the client sees.
 */
const HTTP_STATUS_OF_CODE: Record<string, number> = { QUOTA_EXCEEDED: 429 };

function httpExtension(code: string, extensions: Record<string, unknown>): Record<string, unknown> {
  const status = HTTP_STATUS_OF_CODE[code];
  if (!status) return {};
  const retryAfter = typeof extensions.retryAfter === 'number' ? Math.max(1, Math.ceil(extensions.retryAfter)) : 60;
  return { http: { status, headers: { 'Retry-After': String(retryAfter) } } };
}

/**
 * yoga's error mask, the one place where failures become client errors: expected errors (engine,
 * spec, registry, serving) keep their message and get `extensions.code`; everything else is
 * masked as "Unexpected error." (no stack, paths or SQL reach the client).
 */
export function maskApiError(error: unknown, message: string, isDev?: boolean): Error {
  // Duck-typed: graphql ships CJS and ESM builds, and yoga's GraphQLError may not be ours.
  const at = error && typeof error === 'object' && 'originalError' in error ? (error as Pick<GraphQLError, 'originalError' | 'nodes' | 'path'>) : undefined;
  const expected = expectedError(at?.originalError ?? error);
  if (!expected) return maskError(error, message, isDev);
  return createGraphQLError(expected.message, {
    extensions: { code: expected.code, ...expected.extensions, ...httpExtension(expected.code, expected.extensions) },
    ...(at?.nodes ? { nodes: at.nodes } : {}),
    ...(at?.path ? { path: at.path } : {}),
  });
}
