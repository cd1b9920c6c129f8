import path from 'node:path';
import type { ExecutionResult, GraphQLError } from 'graphql';
import { createGraphQLError, isAsyncIterable, maskError, type Plugin } from 'graphql-yoga';
import { TokenError, type Principal } from '../auth/tokens.js';
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
  return createGraphQLError(message, { extensions: { code, ...extra, ...httpExtension(code, extra) } });
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
  if (e instanceof ServingError || e instanceof RegistryError || e instanceof AuthError || e instanceof TokenError)
    return { code: e.code, message: e.message, extensions: {} };
  return undefined;
}

/**
 * Codes answered with an HTTP status other than GraphQL's usual 200, with `Retry-After` from the
 * error's `retryAfter` (seconds). yoga sets the response's status from `extensions.http` (the
 * highest among the errors) and strips `http` from what the client sees.
 */
const HTTP_STATUS_OF_CODE: Record<string, number> = { QUOTA_EXCEEDED: 429, RATE_LIMITED: 429 };

function httpExtension(code: string, extensions: Record<string, unknown>): Record<string, unknown> {
  const status = HTTP_STATUS_OF_CODE[code];
  if (!status) return {};
  const given = typeof extensions.retryAfter === 'number' ? extensions.retryAfter : extensions.retryAfterSeconds;
  const retryAfter = typeof given === 'number' ? Math.max(1, Math.ceil(given)) : 60;
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

/**
 * An absolute path in a message: a `/` that starts a word (after the start, a space, a quote or
 * an opening bracket, `=` or `,`; so not the path of a URL) followed by a name character, up to
 * the next space, quote, bracket or separator.
 */
const ABSOLUTE_PATH = /(^|[\s"'`([{=,])(\/[A-Za-z0-9._~@%+-][^\s"'`()[\]{}<>,;]*)/g;

/**
 * The text with every absolute server path replaced: one inside a data root by its place there
 * (`<data root 1>/mnist/train.csv`, the roots numbered as configured, the innermost one
 * winning), any other by `<server path>`. A sentence's closing `.` or `:` stays outside.
 */
export function redactServerPaths(text: string, dataRoots: readonly string[] = []): string {
  const roots = dataRoots.map((r, i) => ({ root: path.resolve(r), name: `<data root ${i + 1}>` })).sort((a, b) => b.root.length - a.root.length);
  return text.replace(ABSOLUTE_PATH, (_m, before: string, found: string) => {
    const trail = /[.:]+$/.exec(found)?.[0] ?? '';
    const p = trail ? found.slice(0, -trail.length) : found;
    const hit = roots.find((r) => p === r.root || p.startsWith(r.root === '/' ? '/' : `${r.root}/`));
    const shown = hit ? hit.name + (hit.root === '/' ? p : p.slice(hit.root.length)) : '<server path>';
    return `${before}${shown}${trail}`;
  });
}

/**
 * A text (a stage's error, an event's message, a spec issue) as the caller may see it: whole for
 * an admin, who runs the server; without absolute server paths for everyone else, who has no
 * business knowing where the server keeps its data, tokens and databases.
 */
export function redactForRole<T extends string | null | undefined>(text: T, principal: Pick<Principal, 'role'>, dataRoots: readonly string[] = []): T {
  if (typeof text !== 'string' || principal.role === 'admin') return text;
  return redactServerPaths(text, dataRoots) as T;
}

/**
 * The GraphQL errors of a response as the caller may see them (`redactForRole` on the message and
 * on the messages of `extensions.issues`): the last step before the response is written, once
 * every resolver and the error mask have run.
 */
export function redactErrorsForRole(dataRoots: readonly string[] = []): Plugin<Record<string, unknown>, { principal?: Principal }> {
  const redactError = (e: GraphQLError, principal: Principal): GraphQLError => {
    const issues = e.extensions?.issues;
    const message = redactForRole(e.message, principal, dataRoots);
    const redactedIssues = Array.isArray(issues)
      ? issues.map((i: unknown) =>
          i && typeof i === 'object' && typeof (i as { message?: unknown }).message === 'string'
            ? { ...i, message: redactForRole((i as { message: string }).message, principal, dataRoots) }
            : i,
        )
      : issues;
    if (message === e.message && JSON.stringify(redactedIssues) === JSON.stringify(issues)) return e;
    return createGraphQLError(message, {
      ...(e.nodes ? { nodes: e.nodes } : {}),
      ...(e.path ? { path: e.path } : {}),
      extensions: { ...e.extensions, ...(issues !== undefined ? { issues: redactedIssues } : {}) },
    });
  };
  const fix = (r: ExecutionResult, principal: Principal): ExecutionResult =>
    r.errors?.length ? { ...r, errors: r.errors.map((e) => redactError(e, principal)) } : r;
  return {
    onResultProcess({ result, setResult, serverContext }) {
      const principal = serverContext.principal;
      if (!principal || principal.role === 'admin') return;
      if (Array.isArray(result)) setResult(result.map((r) => fix(r as ExecutionResult, principal)));
      else if (!isAsyncIterable(result)) setResult(fix(result as ExecutionResult, principal));
    },
  };
}
