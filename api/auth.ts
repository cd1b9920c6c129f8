import type { Principal, TokenStore } from '../auth/tokens.js';
import type { Logger } from '../lib/logger.js';

/** How requests prove who they are. */
export type AuthMode =
  /** `Authorization: Bearer <token>` on every request (the default). */
  | { kind: 'tokens'; tokens: TokenStore }
  /** No tokens: every request acts as an admin. Only for an API bound to loopback (refused otherwise at start). */
  | { kind: 'off' };

const ANONYMOUS: Principal = { tokenId: '-', name: 'anonymous (auth off)', role: 'admin' };

/** What a request carries besides itself: the peer address, when the HTTP server knows it. */
export interface RequestMeta {
  remoteAddress?: string;
}

/**
 * The principal of a request, or UNAUTHENTICATED (HTTP 401). Refusals are logged with the
 * reason and the token's public id, never the token itself.
 */
export async function authenticate(request: Request, mode: AuthMode, logger: Logger, meta: RequestMeta = {}): Promise<Principal> {
  if (mode.kind === 'off') return ANONYMOUS;
  const header = request.headers.get('authorization');
  const where = { method: request.method, path: new URL(request.url).pathname, ...(meta.remoteAddress ? { remote: meta.remoteAddress } : {}) };
  if (!header) {
    logger.warn('request refused: no Authorization header', where);
    throw unauthenticated(
      'this API needs "Authorization: Bearer <token>" (npm start writes an admin token to <data dir>/admin-token; npm run token -- create makes others)',
    );
  }
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (!m) {
    logger.warn('request refused: Authorization is not a Bearer token', where);
    throw unauthenticated('Authorization must be "Bearer <token>"');
  }
  const v = await mode.tokens.verify(m[1]!);
  if (!v.ok) {
    logger.warn(`request refused: token ${v.reason}`, { ...where, ...(v.tokenId ? { tokenId: v.tokenId } : {}) });
    throw unauthenticated(v.reason === 'expired' ? 'the token has expired' : v.reason === 'revoked' ? 'the token has been revoked' : 'the token is not valid');
  }
  return v.principal;
}

/** A refused request: UNAUTHENTICATED (no valid token) or FORBIDDEN (the token's role is too weak). */
export class AuthError extends Error {
  constructor(
    readonly code: 'UNAUTHENTICATED' | 'FORBIDDEN',
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

function unauthenticated(message: string): AuthError {
  return new AuthError('UNAUTHENTICATED', message);
}
