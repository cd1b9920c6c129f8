import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { tokenMigrations, TokenStore } from '../auth/tokens.js';
import { migrate } from '../lib/db/migrate.js';
import { openDb } from '../lib/db/open.js';
import type { CapstanConfig } from './config.js';

/** The admin token the dev stack keeps in `<data dir>/admin-token`, if there is one. */
export async function readAdminTokenFile(file: string): Promise<string | undefined> {
  try {
    const t = (await readFile(file, 'utf8')).trim();
    return t || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The dev stack's admin token: the one in the file while it still verifies, else a new one
 * (written with mode 0600). Returns it and whether it was made now.
 */
export async function ensureAdminToken(tokens: TokenStore, file: string): Promise<{ token: string; created: boolean }> {
  const existing = await readAdminTokenFile(file);
  if (existing) {
    const v = await tokens.verify(existing);
    if (v.ok && v.principal.role === 'admin') return { token: existing, created: false };
  }
  const { token } = await tokens.create({ name: 'dev-admin', role: 'admin' });
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return { token, created: true };
}

/** Runs fn over the token store of the configured database (tokens table migrated), then closes it. */
export async function withTokenStore<T>(config: CapstanConfig, fn: (tokens: TokenStore) => Promise<T>): Promise<T> {
  await mkdir(config.dataDir, { recursive: true });
  const db = await openDb({ url: config.databaseUrl, sqlitePath: config.sqlitePath });
  try {
    await migrate(db, tokenMigrations);
    return await fn(new TokenStore(db));
  } finally {
    await db.close();
  }
}
