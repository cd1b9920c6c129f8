// The two real databases the registry runs on: a SQLite file and a throwaway PostgreSQL cluster
// (scripts/postgres.sh starts it, or reuses the running one).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { migrate } from '../../lib/db/migrate.js';
import { openDb } from '../../lib/db/open.js';
import type { Db } from '../../lib/db/types.js';
import { registryMigrations } from '../../serving/registry.js';

const root = path.resolve(import.meta.dirname, '../..');

const PG_PORT = 54329;

/**
 * URL of a test database on the local throwaway cluster. Connects directly when the cluster is
 * already up (creating the database if needed); otherwise starts it with scripts/postgres.sh.
 */
export async function postgresUrl(dbName = 'capstan_models'): Promise<string> {
  const url = `postgres://capstan@127.0.0.1:${PG_PORT}/${dbName}`;
  const pg = (await import('pg')).default;
  const tryConnect = async (u: string): Promise<string | undefined> => {
    const c = new pg.Client({ connectionString: u, connectionTimeoutMillis: 5_000 });
    try {
      await c.connect();
      return undefined;
    } catch (e) {
      return (e as { code?: string }).code ?? 'ERROR';
    } finally {
      await c.end().catch(() => undefined);
    }
  };
  const code = await tryConnect(url);
  if (code === undefined) return url;
  if (code === '3D000') {
    const admin = new pg.Client({ connectionString: `postgres://capstan@127.0.0.1:${PG_PORT}/postgres` });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${dbName}`);
    } catch (e) {
      if ((e as { code?: string }).code !== '42P04') throw e; // created meanwhile
    } finally {
      await admin.end();
    }
    return url;
  }
  const { stdout } = await promisify(execFile)('bash', [path.join(root, 'scripts/postgres.sh'), path.join(root, '.data/pg'), String(PG_PORT), dbName], {
    cwd: root,
    timeout: 120_000,
  });
  const printed = stdout.trim().split('\n').pop()!;
  if (!printed.startsWith('postgres://')) throw new Error(`scripts/postgres.sh printed no URL: ${stdout}`);
  return printed;
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
