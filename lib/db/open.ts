import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { openPostgres } from './postgres.js';
import { openSqlite } from './sqlite.js';
import type { Db } from './types.js';

export interface OpenDbOptions {
  /** DATABASE_URL: a postgres:// (or postgresql://) URL selects PostgreSQL. */
  url?: string | undefined;
  /** The SQLite file used when no PostgreSQL URL is given (its folder is created). */
  sqlitePath: string;
}

export function isPostgresUrl(url: string | undefined): boolean {
  return !!url && /^postgres(ql)?:\/\//i.test(url);
}

/** PostgreSQL when `url` is a postgres:// URL, otherwise the SQLite file at `sqlitePath` (WAL mode). */
export async function openDb(opts: OpenDbOptions): Promise<Db> {
  if (isPostgresUrl(opts.url)) {
    const db = openPostgres({ url: opts.url! });
    await db.query('SELECT 1'); // fail at boot, not at the first write
    return db;
  }
  if (opts.url && opts.url.trim() !== '') {
    throw new Error(`DATABASE_URL must be a postgres:// URL (got "${opts.url.replace(/\/\/[^@]*@/, '//…@')}"); unset it to use SQLite`);
  }
  if (opts.sqlitePath !== ':memory:') mkdirSync(dirname(opts.sqlitePath), { recursive: true });
  return openSqlite({ path: opts.sqlitePath });
}
