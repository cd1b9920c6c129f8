import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

/**
 * Test runs stop every server they start, also when tests fail. The ledger and registry tests
 * start a PostgreSQL cluster under `.data/test-pg` on first use (test/ledger/pg.ts) unless
 * CAPSTAN_TEST_DATABASE_URL names one; if it was not running when the run began, it is stopped
 * when the run ends. (The Temporal dev server is stopped by test/setup/temporal.ts.)
 */
export default function setup(): () => void {
  const root = path.resolve(import.meta.dirname, '../..');
  const dataDir = path.join(root, '.data', 'test-pg');
  const runningBefore = existsSync(path.join(dataDir, 'cluster', 'postmaster.pid'));
  return () => {
    if (process.env.CAPSTAN_TEST_DATABASE_URL || runningBefore) return;
    stopCluster(dataDir, root);
  };
}

/** `pg_ctl stop -m fast` as the cluster's owner (scripts/postgres-stop.sh). */
function stopCluster(dataDir: string, root: string): void {
  try {
    execFileSync('bash', [path.join(root, 'scripts', 'postgres-stop.sh'), dataDir], { stdio: 'ignore', timeout: 60_000 });
  } catch {
    /* already stopped */
  }
}
