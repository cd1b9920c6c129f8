// The two real databases the registry runs on: a SQLite file and a database of its own on the
// tests' PostgreSQL (test/ledger/pg.ts: CAPSTAN_TEST_DATABASE_URL, or the throwaway cluster that the
// test run stops when it ends).
import path from 'node:path';
import { migrate } from '../../lib/db/migrate.js';
import { openDb } from '../../lib/db/open.js';
import type { Db } from '../../lib/db/types.js';
import { registryMigrations } from '../../serving/registry.js';
import { getTestPostgresUrl } from '../ledger/pg.js';

/** URL of database `dbName` on the tests' PostgreSQL, created when missing. */
export async function postgresUrl(dbName = 'capstan_models'): Promise<string> {
  const base = getTestPostgresUrl();
  const url = new URL(base);
  url.pathname = `/${dbName}`;
  const pg = (await import('pg')).default;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    for (let tries = 0; ; tries++) {
      try {
        await admin.query(`CREATE DATABASE ${dbName}`);
        break;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === '42P04') break; // it exists
        // Another project creating its database from template1 at the same moment: try again.
        if (code !== '55006' || tries >= 20) throw e;
        await new Promise((r) => setTimeout(r, 250)); // fixed-sleep-ok: backs off before retrying CREATE DATABASE (PostgreSQL says when to retry only by failing)
      }
    }
  } finally {
    await admin.end();
  }
  return url.toString();
}

/** A migrated registry database with empty registry tables. */
export async function freshRegistryDb(kind: 'sqlite' | 'postgres', sqliteDir: string): Promise<Db> {
  // One PostgreSQL database per vitest project (wasm, native): the projects run this file at the
  // same time, and each empties the registry tables of its own database.
  const pgName = `capstan_models_${(process.env.CAPSTAN_TF_BACKEND ?? 'default').replace(/\W/g, '_')}`;
  const db =
    kind === 'sqlite'
      ? await openDb({ sqlitePath: path.join(sqliteDir, `registry-${Date.now()}-${Math.random().toString(36).slice(2)}.db`) })
      : await openDb({ url: await postgresUrl(pgName), sqlitePath: '' });
  if (kind === 'postgres') {
    await db.run('DROP TABLE IF EXISTS model_versions, model_aliases, model_alias_events, model_owners');
    await db.run('CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
    await db.run("DELETE FROM schema_migrations WHERE id LIKE 'registry/%'");
  }
  await migrate(db, registryMigrations);
  return db;
}
