import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate } from '../../lib/db/migrate.js';
import { rewritePlaceholders } from '../../lib/db/postgres.js';
import type { Db } from '../../lib/db/types.js';
import { createTestDatabase, dialects, type TestDatabase } from './dbs.js';

describe('rewritePlaceholders', () => {
  it('numbers ? outside strings, identifiers, comments and dollar quotes', () => {
    expect(rewritePlaceholders(`SELECT ?, '?', "a?", ? -- ?\n, $$?$$, ? /* ? */`)).toBe(`SELECT $1, '?', "a?", $2 -- ?\n, $$?$$, $3 /* ? */`);
    expect(rewritePlaceholders(`SELECT 'it''s ?', ?`)).toBe(`SELECT 'it''s ?', $1`);
  });
});

describe.each(dialects)('Db on %s', (dialect) => {
  let t: TestDatabase;
  let db: Db;
  beforeEach(async () => {
    t = await createTestDatabase(dialect);
    db = t.db;
    await db.run('CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL, flag INTEGER)');
  });
  afterEach(async () => t.drop());

  it('runs, queries and counts changed rows', async () => {
    expect(db.dialect).toBe(dialect);
    expect(await db.run('INSERT INTO items (id, n, flag) VALUES (?, ?, ?), (?, ?, ?)', ['a', 1, true, 'b', 2, false])).toBe(2);
    expect(await db.run('INSERT INTO items (id, n) VALUES (?, ?) ON CONFLICT DO NOTHING', ['a', 5])).toBe(0);
    const rows = await db.query<{ id: string; n: string; flag: number }>('SELECT id, CAST(n AS TEXT) AS n, flag FROM items ORDER BY id');
    expect(rows).toEqual([
      { id: 'a', n: '1', flag: 1 },
      { id: 'b', n: '2', flag: 0 },
    ]);
  });

  it('keeps int64 exact through CAST AS TEXT', async () => {
    await db.run('INSERT INTO items (id, n) VALUES (?, ?)', ['big', 9_007_199_254_740_993n]);
    const rows = await db.query<{ n: string }>('SELECT CAST(n AS TEXT) AS n FROM items WHERE id = ?', ['big']);
    expect(rows[0]?.n).toBe('9007199254740993');
  });

  it('commits a transaction and rolls it back on error', async () => {
    await db.tx(async (tx) => {
      await tx.run('INSERT INTO items (id, n) VALUES (?, ?)', ['in', 1]);
    });
    await expect(
      db.tx(async (tx) => {
        await tx.run('INSERT INTO items (id, n) VALUES (?, ?)', ['gone', 1]);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const ids = (await db.query<{ id: string }>('SELECT id FROM items ORDER BY id')).map((r) => r.id);
    expect(ids).toEqual(['in']);
  });

  it('nests transactions as savepoints', async () => {
    await db.tx(async (tx) => {
      await tx.run('INSERT INTO items (id, n) VALUES (?, ?)', ['outer', 1]);
      await expect(
        tx.tx(async (inner) => {
          await inner.run('INSERT INTO items (id, n) VALUES (?, ?)', ['inner', 1]);
          throw new Error('inner fails');
        }),
      ).rejects.toThrow('inner fails');
    });
    const ids = (await db.query<{ id: string }>('SELECT id FROM items ORDER BY id')).map((r) => r.id);
    expect(ids).toEqual(['outer']);
  });

  it('does not let statements outside a transaction run inside it', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const txDone = db
      .tx(async (tx) => {
        await tx.run('INSERT INTO items (id, n) VALUES (?, ?)', ['tx', 1]);
        await gate;
        throw new Error('rolled back');
      })
      .catch(() => undefined);
    const outside = db.run('INSERT INTO items (id, n) VALUES (?, ?)', ['outside', 1]);
    release();
    await txDone;
    await outside;
    const ids = (await db.query<{ id: string }>('SELECT id FROM items ORDER BY id')).map((r) => r.id);
    expect(ids).toEqual(['outside']);
  });

  it('migrates once, in order, idempotently, and safely from several connections at once', async () => {
    const migrations = [
      { id: 'test/0001-a', sql: 'CREATE TABLE mig_a (id TEXT PRIMARY KEY)' },
      {
        id: 'test/0002-b',
        sql: {
          sqlite: 'CREATE TABLE mig_b (id TEXT); CREATE INDEX mig_b_id ON mig_b (id)',
          postgres: 'CREATE TABLE mig_b (id TEXT); CREATE INDEX mig_b_id ON mig_b (id)',
        },
      },
    ];
    const others = await Promise.all([t.open(), t.open(), t.open()]);
    const applied = await Promise.all([db, ...others].map((d) => migrate(d, migrations)));
    expect(applied.flat().sort()).toEqual(['test/0001-a', 'test/0002-b']);
    expect(await migrate(db, migrations)).toEqual([]);
    const more = [...migrations, { id: 'test/0003-c', sql: 'ALTER TABLE mig_a ADD COLUMN note TEXT' }];
    expect(await migrate(db, more)).toEqual(['test/0003-c']);
    const rows = await db.query<{ id: string }>('SELECT id FROM schema_migrations ORDER BY id');
    expect(rows.map((r) => r.id)).toEqual(['test/0001-a', 'test/0002-b', 'test/0003-c']);
  });

  it('rolls back a failing migration entirely', async () => {
    const bad = [
      { id: 'bad/0001', sql: 'CREATE TABLE mig_ok (id TEXT)' },
      { id: 'bad/0002', sql: 'CREATE TABLE mig_ok (id TEXT)' },
    ];
    await expect(migrate(db, bad)).rejects.toThrow();
    expect(await migrate(db, [bad[0]!])).toEqual(['bad/0001']);
  });
});
