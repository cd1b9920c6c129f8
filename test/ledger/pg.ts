import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let cached: string | undefined;
let failure: Error | undefined;

/**
 * The PostgreSQL the tests use: CAPSTAN_TEST_DATABASE_URL if set, otherwise a throwaway cluster
 * started (once per process; the script is idempotent and locked) by scripts/postgres.sh under
 * .data/test-pg on port CAPSTAN_TEST_PG_PORT (54339). Throws — never skips — if it cannot start.
 */
export function getTestPostgresUrl(): string {
  if (cached) return cached;
  if (failure) throw failure;
  const fromEnv = process.env.CAPSTAN_TEST_DATABASE_URL;
  if (fromEnv) return (cached = fromEnv);
  const port = process.env.CAPSTAN_TEST_PG_PORT ?? '54339';
  let out: string;
  try {
    out = execFileSync('bash', [join(root, 'scripts', 'postgres.sh'), join(root, '.data', 'test-pg'), port, 'capstan_test'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 600_000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw (failure = new Error(
      `could not start the test PostgreSQL with scripts/postgres.sh (set CAPSTAN_TEST_DATABASE_URL to use another): ${e.stderr ?? e.message}`,
    ));
  }
  const url = out.trim().split('\n').pop();
  if (!url || !/^postgres(ql)?:\/\//.test(url)) throw new Error(`scripts/postgres.sh printed no DATABASE_URL: ${out}`);
  return (cached = url);
}
