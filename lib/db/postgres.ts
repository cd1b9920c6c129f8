import pg from 'pg';
import type { Db } from './types.js';

/** `query` and `run` over a pool or one client (inside a transaction). */
function statements(q: pg.Pool | pg.PoolClient): Pick<Db, 'query' | 'run'> {
  return {
    async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      const res = await q.query(rewritePlaceholders(sql), params.map(toPgParam));
      return (res.rows ?? []) as T[];
    },
    async run(sql: string, params: unknown[] = []): Promise<number> {
      return rowCount(await q.query(rewritePlaceholders(sql), params.map(toPgParam)));
    },
  };
}

/**
 * PostgreSQL through a pg Pool. SQL uses `?` placeholders, rewritten to $1, $2, … (outside quoted
 * strings, quoted identifiers and comments). Note: pg returns BIGINT and COUNT(*) as strings;
 * code that needs exact integers in both dialects should CAST(... AS TEXT) and parse.
 */
export function openPostgres(opts: { url: string; max?: number }): Db {
  const pool = new pg.Pool({ connectionString: opts.url, max: opts.max ?? 10 });
  // An idle client that errors (server restart) must not crash the process.
  pool.on('error', () => {});
  let closed = false;

  const bind = (client: pg.PoolClient): Db => {
    let savepoints = 0;
    const db: Db = {
      dialect: 'postgres',
      ...statements(client),
      async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
        const name = `sp${++savepoints}`;
        await client.query(`SAVEPOINT ${name}`);
        try {
          const out = await fn(db);
          await client.query(`RELEASE SAVEPOINT ${name}`);
          return out;
        } catch (err) {
          await client.query(`ROLLBACK TO SAVEPOINT ${name}`);
          throw err;
        }
      },
      async close(): Promise<void> {
        throw new Error('close() the root Db, not the one bound to a transaction');
      },
    };
    return db;
  };

  return {
    dialect: 'postgres',
    ...statements(pool),
    async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
      const client = await pool.connect();
      let broken = false;
      try {
        await client.query('BEGIN');
        try {
          const out = await fn(bind(client));
          await client.query('COMMIT');
          return out;
        } catch (err) {
          try {
            await client.query('ROLLBACK');
          } catch {
            broken = true;
          }
          throw err;
        }
      } finally {
        client.release(broken);
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}

function rowCount(res: pg.QueryResult | pg.QueryResult[]): number {
  // A multi-statement text returns one result per statement.
  if (Array.isArray(res)) return res.reduce((n, r) => n + (r.rowCount ?? 0), 0);
  return res.rowCount ?? 0;
}

function toPgParam(v: unknown): unknown {
  if (v === undefined) return null;
  if (typeof v === 'bigint') return v.toString();
  // As on SQLite: true/false → 1/0, which PostgreSQL also accepts for BOOLEAN columns.
  if (typeof v === 'boolean') return v ? 1 : 0;
  return v;
}

/** `?` → `$n`, skipping '…' strings, "…" identifiers, $tag$…$tag$ bodies and comments. */
export function rewritePlaceholders(sql: string): string {
  let out = '';
  let n = 0;
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === "'" || c === '"') {
      const end = findClose(sql, i + 1, c);
      out += sql.slice(i, end);
      i = end;
    } else if (c === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      const stop = end === -1 ? sql.length : end;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === '/' && next === '*') {
      const end = sql.indexOf('*/', i + 2);
      const stop = end === -1 ? sql.length : end + 2;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === '$') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (m) {
        const tag = m[0];
        const end = sql.indexOf(tag, i + tag.length);
        const stop = end === -1 ? sql.length : end + tag.length;
        out += sql.slice(i, stop);
        i = stop;
      } else {
        out += c;
        i++;
      }
    } else if (c === '?') {
      out += `$${++n}`;
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

function findClose(sql: string, from: number, quote: string): number {
  let i = from;
  while (i < sql.length) {
    if (sql[i] === quote) {
      if (sql[i + 1] === quote) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    i++;
  }
  return sql.length;
}
