import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { openDb } from '../../lib/db/open.js';
import type { Db } from '../../lib/db/types.js';
import { getTestPostgresUrl } from './pg.js';

export const dialects = ['sqlite', 'postgres'] as const;
export type Dialect = (typeof dialects)[number];

/** An isolated database: a fresh SQLite file, or a fresh schema on the test PostgreSQL. `open()` gives more connections to the same one. */
export interface TestDatabase {
  db: Db;
  /** What openDb needs to reach the same database from another process. */
  target: { url?: string; sqlitePath: string };
  open(): Promise<Db>;
  drop(): Promise<void>;
}

export async function createTestDatabase(dialect: Dialect): Promise<TestDatabase> {
  const opened: Db[] = [];
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'capstan-ledger-'));
    const path = join(dir, 'test.sqlite');
    const open = async () => {
      const db = await openDb({ sqlitePath: path });
      opened.push(db);
      return db;
    };
    const db = await open();
    return {
      db,
      target: { sqlitePath: path },
      open,
      async drop() {
        for (const d of opened) await d.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const base = getTestPostgresUrl();
  const schema = `t_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const url = new URL(base);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const open = async () => {
    const db = await openDb({ url: url.toString(), sqlitePath: '/nonexistent' });
    opened.push(db);
    return db;
  };
  const db = await open();
  return {
    db,
    target: { url: url.toString(), sqlitePath: '/nonexistent' },
    open,
    async drop() {
      for (const d of opened) await d.close();
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.end();
    },
  };
}
