import Database from 'better-sqlite3';
import type { Db } from './types.js';

/**
 * SQLite through better-sqlite3 (synchronous driver behind the async Db interface).
 *
 * One connection per Db. `tx` opens `BEGIN IMMEDIATE` (takes the write lock up front, so two
 * processes sharing the file serialise instead of failing on lock upgrade) and holds an
 * in-process lock: statements issued on the root Db while a transaction is open wait for it to
 * finish, so they never run inside someone else's transaction. Nested `tx` on a bound Db uses
 * a SAVEPOINT.
 */
export function openSqlite(opts: { path: string; busyTimeoutMs?: number }): Db {
  const conn = new Database(opts.path);
  // The driver is synchronous: its own busy wait would block the event loop, and with it any
  // other connection of this process that holds the lock. So SQLite never waits (busy_timeout 0)
  // and we retry SQLITE_BUSY asynchronously, up to busyTimeoutMs.
  conn.pragma('busy_timeout = 10000'); // only while opening (switching to WAL may wait briefly)
  conn.pragma('journal_mode = WAL');
  conn.pragma('synchronous = NORMAL');
  conn.pragma('foreign_keys = ON');
  conn.pragma('busy_timeout = 0');
  const busyTimeoutMs = opts.busyTimeoutMs ?? 30_000;

  // In-process mutex for transactions. `txActive` is checked synchronously right before every
  // statement issued on the root Db, so such a statement never lands inside a transaction.
  let lock: Promise<void> = Promise.resolve();
  let txActive = false;
  let closed = false;
  let savepoints = 0;

  const acquire = async (): Promise<() => void> => {
    const previous = lock;
    let release!: () => void;
    lock = new Promise<void>((resolve) => (release = resolve));
    await previous;
    txActive = true;
    return () => {
      txActive = false;
      release();
    };
  };
  const waitIdle = async (): Promise<void> => {
    while (txActive) await lock;
  };
  /** Runs a root statement outside any transaction, retrying SQLITE_BUSY without blocking the event loop. */
  const outsideTx = <T>(fn: () => T): Promise<T> =>
    retryBusy(async () => {
      // Check and run in one synchronous step (no await in between).
      while (txActive) await lock;
      return fn();
    }, busyTimeoutMs);

  const bound: Db = {
    dialect: 'sqlite',
    async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      return queryNow<T>(conn, sql, params);
    },
    async run(sql: string, params: unknown[] = []): Promise<number> {
      return runNow(conn, sql, params);
    },
    async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
      const name = `sp${++savepoints}`;
      conn.exec(`SAVEPOINT ${name}`);
      try {
        const out = await fn(bound);
        conn.exec(`RELEASE ${name}`);
        return out;
      } catch (err) {
        conn.exec(`ROLLBACK TO ${name}`);
        conn.exec(`RELEASE ${name}`);
        throw err;
      }
    },
    async close(): Promise<void> {
      throw new Error('close() the root Db, not the one bound to a transaction');
    },
  };

  const root: Db = {
    dialect: 'sqlite',
    async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      return outsideTx(() => queryNow<T>(conn, sql, params));
    },
    async run(sql: string, params: unknown[] = []): Promise<number> {
      return outsideTx(() => runNow(conn, sql, params));
    },
    async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
      const release = await acquire();
      try {
        await retryBusy(async () => conn.exec('BEGIN IMMEDIATE'), busyTimeoutMs);
        try {
          const out = await fn(bound);
          conn.exec('COMMIT');
          return out;
        } catch (err) {
          if (conn.inTransaction) conn.exec('ROLLBACK');
          throw err;
        }
      } finally {
        release();
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await waitIdle();
      conn.close();
    },
  };
  return root;
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT' || code === 'SQLITE_LOCKED';
}

async function retryBusy<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isBusy(err) || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
      delay = Math.min(delay * 2, 100);
    }
  }
}

function toSqliteParam(v: unknown): unknown {
  if (v === undefined) return null;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (v instanceof Date) return v.toISOString();
  return v;
}

function queryNow<T>(conn: Database.Database, sql: string, params: unknown[]): T[] {
  const stmt = conn.prepare(sql);
  const values = params.map(toSqliteParam);
  if (stmt.reader) return stmt.all(...values) as T[];
  stmt.run(...values);
  return [];
}

function runNow(conn: Database.Database, sql: string, params: unknown[]): number {
  let stmt: Database.Statement;
  try {
    stmt = conn.prepare(sql);
  } catch (err) {
    // Several statements in one text (e.g. a migration): exec them; no row count.
    if (params.length === 0 && err instanceof RangeError) {
      conn.exec(sql);
      return 0;
    }
    throw err;
  }
  const values = params.map(toSqliteParam);
  if (stmt.reader) {
    stmt.all(...values);
    return 0;
  }
  return stmt.run(...values).changes;
}
