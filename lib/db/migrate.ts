import type { Db, Migration } from './types.js';

/** Arbitrary constant: the advisory lock every Capstan process takes while migrating PostgreSQL. */
const PG_MIGRATION_LOCK = 7_263_811_402;

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  id TEXT PRIMARY KEY,
  applied_at TEXT NOT NULL
)`;

/**
 * Applies the migrations not applied yet, in list order, each recorded in `schema_migrations`.
 * Idempotent. Each module passes its own list with namespaced ids (`ledger/0001-init`,
 * `registry/0001-init`, …); ids already applied are skipped, so lists can be migrated
 * independently and in any order between modules.
 *
 * Concurrency: the whole batch runs in one transaction. On PostgreSQL it first takes a
 * transaction-scoped advisory lock, so two processes migrating at once serialise (DDL is
 * transactional there). On SQLite the transaction is BEGIN IMMEDIATE, which takes the file's
 * write lock up front. Returns the ids applied by this call.
 */
export async function migrate(db: Db, migrations: readonly Migration[]): Promise<string[]> {
  const ids = new Set<string>();
  for (const m of migrations) {
    if (ids.has(m.id)) throw new Error(`duplicate migration id "${m.id}"`);
    ids.add(m.id);
  }
  return db.tx(async (tx) => {
    if (tx.dialect === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(?)', [PG_MIGRATION_LOCK]);
    await tx.run(CREATE_TABLE);
    const rows = await tx.query<{ id: string }>('SELECT id FROM schema_migrations');
    const done = new Set(rows.map((r) => r.id));
    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.id)) continue;
      const sql = typeof m.sql === 'string' ? m.sql : m.sql[tx.dialect];
      await tx.run(sql);
      await tx.run('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)', [m.id, new Date().toISOString()]);
      applied.push(m.id);
    }
    return applied;
  });
}
