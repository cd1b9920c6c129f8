import { buildConsole } from '../../scripts/build-console.js';

/** Builds the console once per test run (console/dist, served by the API at /console); fails over its size budget. */
export default async function setup(): Promise<void> {
  const b = await buildConsole();
  process.env.CAPSTAN_CONSOLE_GZIP_BYTES = String(b.gzipBytes);
}
