import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db, Migration } from '../lib/db/types.js';
import { isRole, type Role } from './roles.js';

export const tokenMigrations: Migration[] = [
  {
    id: 'auth/0001-tokens',
    sql: `CREATE TABLE IF NOT EXISTS api_tokens (
      id TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      role TEXT NOT NULL,
      secret_sha256 TEXT NOT NULL,
      created_at TEXT NOT NULL,
      expires_at TEXT,
      revoked_at TEXT
    )`,
  },
];

/** A token as an admin sees it: never the secret. */
export interface TokenInfo {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
}

/** Who made a request. */
export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
}

/** Why a presented token was refused (logged; the client only learns it is not valid). */
export type TokenRefusal = 'malformed' | 'unknown' | 'expired' | 'revoked';

interface Row {
  id: string;
  name: string;
  role: string;
  secret_sha256: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

const PREFIX = 'cap';
/** `cap_<id>_<secret>`: the id (public, 12 hex) finds the row; the secret (256 bits) is checked against its hash. */
const TOKEN_RE = /^cap_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$/;

const sha256 = (s: string) => createHash('sha256').update(s).digest();

export class TokenError extends Error {
  constructor(
    readonly code: 'BAD_ARGUMENT' | 'NOT_FOUND',
    message: string,
  ) {
    super(message);
    this.name = 'TokenError';
  }
}

/** API tokens: random, stored only as SHA-256 hashes, compared in constant time, named, with optional expiry. */
export class TokenStore {
  constructor(
    private readonly db: Db,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Creates a token; the returned secret is shown once and never stored. */
  async create(o: { name: string; role: Role; expiresAt?: Date }): Promise<{ token: string; info: TokenInfo }> {
    if (!NAME_RE.test(o.name))
      throw new TokenError('BAD_ARGUMENT', `token name "${o.name}" must be 1–64 letters, digits, spaces or . _ @ -, starting with a letter or digit`);
    if (!isRole(o.role)) throw new TokenError('BAD_ARGUMENT', `role must be viewer, predictor, operator or admin; got "${String(o.role)}"`);
    const createdAt = this.now();
    if (o.expiresAt && !(o.expiresAt.getTime() > createdAt.getTime())) throw new TokenError('BAD_ARGUMENT', 'expiresAt must be in the future');
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const info: TokenInfo = {
      id,
      name: o.name,
      role: o.role,
      createdAt: createdAt.toISOString(),
      expiresAt: o.expiresAt?.toISOString() ?? null,
      revokedAt: null,
    };
    await this.db.run('INSERT INTO api_tokens (id, name, role, secret_sha256, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)', [
      id,
      info.name,
      info.role,
      sha256(secret).toString('hex'),
      info.createdAt,
      info.expiresAt,
    ]);
    return { token: `${PREFIX}_${id}_${secret}`, info };
  }

  /** The principal of a presented token, or why it is refused. */
  async verify(presented: string): Promise<{ ok: true; principal: Principal } | { ok: false; reason: TokenRefusal; tokenId?: string }> {
    const m = TOKEN_RE.exec(presented);
    if (!m) return { ok: false, reason: 'malformed' };
    const [, id, secret] = m as unknown as [string, string, string];
    const rows = await this.db.query<Row>('SELECT * FROM api_tokens WHERE id = ?', [id]);
    const row = rows[0];
    // Hash and compare even for unknown ids, so timing says nothing about which ids exist.
    const expected = row ? Buffer.from(row.secret_sha256, 'hex') : Buffer.alloc(32);
    const match = timingSafeEqual(sha256(secret), expected.length === 32 ? expected : Buffer.alloc(32));
    if (!row || !match) return { ok: false, reason: 'unknown', tokenId: id };
    if (row.revoked_at) return { ok: false, reason: 'revoked', tokenId: id };
    if (row.expires_at && Date.parse(row.expires_at) <= this.now().getTime()) return { ok: false, reason: 'expired', tokenId: id };
    if (!isRole(row.role)) return { ok: false, reason: 'unknown', tokenId: id };
    return { ok: true, principal: { tokenId: row.id, name: row.name, role: row.role } };
  }

  async list(): Promise<TokenInfo[]> {
    return (await this.db.query<Row>('SELECT * FROM api_tokens ORDER BY created_at, id')).map(info);
  }

  /** Revokes a token at once; true if it was active. */
  async revoke(id: string): Promise<TokenInfo> {
    const rows = await this.db.query<Row>('SELECT * FROM api_tokens WHERE id = ?', [id]);
    if (!rows[0]) throw new TokenError('NOT_FOUND', `token ${id} not found`);
    if (!rows[0].revoked_at) await this.db.run('UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [this.now().toISOString(), id]);
    return info((await this.db.query<Row>('SELECT * FROM api_tokens WHERE id = ?', [id]))[0]!);
  }

  /** Whether a token (by its public id) exists and is neither revoked nor expired: what a schedule checks of its creator at each firing. */
  async isActive(id: string): Promise<boolean> {
    const rows = await this.db.query<{ id: string }>(
      'SELECT id FROM api_tokens WHERE id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)',
      [id, this.now().toISOString()],
    );
    return rows.length > 0;
  }

  /** Whether any active admin token exists (the dev stack creates one on first start). */
  async hasActiveAdmin(): Promise<boolean> {
    const now = this.now().toISOString();
    const rows = await this.db.query<{ id: string }>(
      "SELECT id FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
      [now],
    );
    return rows.length > 0;
  }
}

function info(r: Row): TokenInfo {
  return { id: r.id, name: r.name, role: isRole(r.role) ? r.role : 'viewer', createdAt: r.created_at, expiresAt: r.expires_at, revokedAt: r.revoked_at };
}
