/**
 * One query layer over SQLite (better-sqlite3) and PostgreSQL (pg).
 * SQL is written once with `?` placeholders; the PostgreSQL driver rewrites them to $1, $2, ….
 * Write portable SQL (no AUTOINCREMENT/SERIAL differences in queries; use TEXT/INTEGER/BIGINT).
 */
export interface Db {
  readonly dialect: 'sqlite' | 'postgres';
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: unknown[]): Promise<number>;
  /** Runs fn in one transaction; the Db passed in is bound to it. */
  tx<T>(fn: (db: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** A named schema migration; applied once, in order, recorded in a migrations table. */
export interface Migration {
  id: string;
  /** Either one SQL text for both dialects or one per dialect. */
  sql: string | { sqlite: string; postgres: string };
}
