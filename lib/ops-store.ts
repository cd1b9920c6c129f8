import type { StageCache } from '../activities/index.js';
import type { StageResult } from '../plugins/contract.js';
import { migrate } from './db/migrate.js';
import type { Db, Migration } from './db/types.js';

/** Tables for operating runs: the opt-in stage cache and saved pipelines with their triggers. */
export const opsMigrations: Migration[] = [
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
  {
    id: 'ops/0002-saved-pipelines',
    sql: `CREATE TABLE IF NOT EXISTS saved_pipelines (
      name TEXT PRIMARY KEY,
      spec_json TEXT NOT NULL,
      triggers_json TEXT NOT NULL,
      updated_at TEXT NOT NULL
    )`,
  },
];

export async function migrateOps(db: Db): Promise<void> {
  await migrate(db, opsMigrations);
}

/** Stage cache in the database: key = hash(plugin, version, params, input hashes). First writer wins. */
export function createDbStageCache(db: Db): StageCache {
  return {
    async lookup(key) {
      const rows = await db.query<{ result_json: string }>('SELECT result_json FROM stage_cache WHERE cache_key = ?', [key]);
      return rows[0] ? (JSON.parse(rows[0].result_json) as StageResult) : undefined;
    },
    async store(key, runId, stageId, result) {
      await db.run(
        'INSERT INTO stage_cache (cache_key, run_id, stage_id, result_json, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (cache_key) DO NOTHING',
        [key, runId, stageId, JSON.stringify({ outputs: result.outputs, metrics: { ...result.metrics, cachedFromRun: runId } }), new Date().toISOString()],
      );
    },
  };
}

export interface SavedPipeline {
  name: string;
  spec: unknown;
  /** Event types that start this pipeline, e.g. `dataset.updated`. */
  triggers: string[];
  updatedAt: string;
}

export function savedPipelines(db: Db) {
  const row = (r: { name: string; spec_json: string; triggers_json: string; updated_at: string }): SavedPipeline => ({
    name: r.name,
    spec: JSON.parse(r.spec_json),
    triggers: JSON.parse(r.triggers_json) as string[],
    updatedAt: r.updated_at,
  });
  return {
    async save(p: { name: string; spec: unknown; triggers: string[] }): Promise<SavedPipeline> {
      const at = new Date().toISOString();
      await db.run(
        `INSERT INTO saved_pipelines (name, spec_json, triggers_json, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json, triggers_json = excluded.triggers_json, updated_at = excluded.updated_at`,
        [p.name, JSON.stringify(p.spec), JSON.stringify(p.triggers), at],
      );
      return { ...p, updatedAt: at };
    },
    async get(name: string): Promise<SavedPipeline | undefined> {
      const rows = await db.query<{ name: string; spec_json: string; triggers_json: string; updated_at: string }>('SELECT * FROM saved_pipelines WHERE name = ?', [name]);
      return rows[0] ? row(rows[0]) : undefined;
    },
    async list(): Promise<SavedPipeline[]> {
      const rows = await db.query<{ name: string; spec_json: string; triggers_json: string; updated_at: string }>('SELECT * FROM saved_pipelines ORDER BY name');
      return rows.map(row);
    },
    async delete(name: string): Promise<boolean> {
      return (await db.run('DELETE FROM saved_pipelines WHERE name = ?', [name])) > 0;
    },
    async byTrigger(eventType: string): Promise<SavedPipeline[]> {
      return (await this.list()).filter((p) => p.triggers.includes(eventType));
    },
  };
}
