import type { Db, Migration } from '../lib/db/types.js';
import type { StageResult } from '../plugins/contract.js';
import type { StageCache } from './run-stage.js';

/** The opt-in stage cache's table (the id keeps its historical `ops/` prefix: databases have it recorded). */
export const stageCacheMigrations: Migration[] = [
  {
    id: 'ops/0001-stage-cache',
    sql: `CREATE TABLE IF NOT EXISTS stage_cache (
      cache_key TEXT PRIMARY KEY,
      run_id TEXT NOT NULL,
      stage_id TEXT NOT NULL,
      result_json TEXT NOT NULL,
      created_at TEXT NOT NULL
    )`,
  },
];

/** Stage cache in the database: key = hash(plugin, version, params, input hashes). First writer wins. */
export function createDbStageCache(db: Db): StageCache {
  return {
    async lookup(key) {
      const rows = await db.query<{ result_json: string }>('SELECT result_json FROM stage_cache WHERE cache_key = ?', [key]);
      return rows[0] ? (JSON.parse(rows[0].result_json) as StageResult) : undefined;
    },
    async store(key, runId, stageId, result) {
      await db.run('INSERT INTO stage_cache (cache_key, run_id, stage_id, result_json, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (cache_key) DO NOTHING', [
        key,
        runId,
        stageId,
        JSON.stringify({ outputs: result.outputs, metrics: { ...result.metrics, cachedFromRun: runId } }),
        new Date().toISOString(),
      ]);
    },
  };
}
