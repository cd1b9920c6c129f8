// Removes artifacts no run can need any more (engine/retention.ts):
//   npm run gc                   # with CAPSTAN_RETENTION (default 45d)
//   npm run gc -- --dry-run      # only say what would go
//   npm run gc -- --keep 10d
// Workers serving cpu stages also run it every CAPSTAN_GC_EVERY (default 24h).
import { parseArgs } from 'node:util';
import { loadConfig } from '../app/config.js';
import { createRuntime } from '../app/runtime.js';
import { collectGarbage } from '../engine/retention.js';
import { parseDurationMs } from '../lib/duration.js';
import { createConsoleLogger } from '../lib/logger.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'dry-run': { type: 'boolean', default: false }, keep: { type: 'string' } } });
  const config = loadConfig(process.env, process.cwd());
  const keepRunsMs = values.keep !== undefined ? parseDurationMs(values.keep) : config.retentionMs;
  if (keepRunsMs === undefined || keepRunsMs < 3_600_000) throw new Error(`--keep must be a duration of at least 1h, like 30d; got "${values.keep}"`);
  const rt = await createRuntime(config, createConsoleLogger({ name: 'gc', level: 'warn', format: config.telemetry.logFormat }));
  try {
    const r = await collectGarbage({ artifacts: rt.artifacts, db: rt.db, policy: { keepRunsMs }, dryRun: values['dry-run'] });
    for (const x of r.removed) process.stdout.write(`${values['dry-run'] ? 'would remove' : 'removed'} ${x.path} (${x.bytes} bytes): ${x.why}\n`);
    process.stdout.write(
      `${values['dry-run'] ? 'would free' : 'freed'} ${r.bytesFreed} bytes in ${r.removed.length} folders; kept ${r.kept.length} run folders; dropped ${r.cacheRowsDropped} stale cache entries\n`,
    );
  } finally {
    await rt.close();
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
