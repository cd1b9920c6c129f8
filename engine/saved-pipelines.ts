import type { Db, Migration } from '../lib/db/types.js';
import type { RunStarter } from '../workflows/types.js';

/** The saved pipelines' table (the id keeps its historical `ops/` prefix: databases have it recorded). */
export const savedPipelineMigrations: Migration[] = [
  {
    id: 'ops/0002-saved-pipelines',
    sql: `CREATE TABLE IF NOT EXISTS saved_pipelines (
      name TEXT PRIMARY KEY,
      spec_json TEXT NOT NULL,
      triggers_json TEXT NOT NULL,
      updated_at TEXT NOT NULL
    )`,
  },
  // Who saved it (name, role, token id): its triggers fire only while that token is active.
  { id: 'ops/0003-saved-pipelines-saved-by', sql: 'ALTER TABLE saved_pipelines ADD COLUMN saved_by_json TEXT' },
];

export interface SavedPipeline {
  name: string;
  spec: unknown;
  /** Event types that start this pipeline, e.g. `dataset.updated`. */
  triggers: string[];
  updatedAt: string;
  /** The principal who saved it last (absent for pipelines saved before it was recorded). */
  savedBy?: RunStarter;
}

interface Row {
  name: string;
  spec_json: string;
  triggers_json: string;
  updated_at: string;
  saved_by_json?: string | null;
}

const fromRow = (r: Row): SavedPipeline => ({
  name: r.name,
  spec: JSON.parse(r.spec_json),
  triggers: JSON.parse(r.triggers_json) as string[],
  updatedAt: r.updated_at,
  ...(r.saved_by_json ? { savedBy: JSON.parse(r.saved_by_json) as RunStarter } : {}),
});

/** Saved pipeline specs with the event types that trigger them. */
export class SavedPipelineStore {
  constructor(private readonly db: Db) {}

  async save(p: { name: string; spec: unknown; triggers: string[]; savedBy?: RunStarter }): Promise<SavedPipeline> {
    const at = new Date().toISOString();
    await this.db.run(
      `INSERT INTO saved_pipelines (name, spec_json, triggers_json, updated_at, saved_by_json) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json, triggers_json = excluded.triggers_json, updated_at = excluded.updated_at, saved_by_json = excluded.saved_by_json`,
      [p.name, JSON.stringify(p.spec), JSON.stringify(p.triggers), at, p.savedBy ? JSON.stringify(p.savedBy) : null],
    );
    return { ...p, updatedAt: at };
  }

  async get(name: string): Promise<SavedPipeline | undefined> {
    const rows = await this.db.query<Row>('SELECT * FROM saved_pipelines WHERE name = ?', [name]);
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  async list(): Promise<SavedPipeline[]> {
    return (await this.db.query<Row>('SELECT * FROM saved_pipelines ORDER BY name')).map(fromRow);
  }

  async delete(name: string): Promise<boolean> {
    return (await this.db.run('DELETE FROM saved_pipelines WHERE name = ?', [name])) > 0;
  }

  async byTrigger(eventType: string): Promise<SavedPipeline[]> {
    return (await this.list()).filter((p) => p.triggers.includes(eventType));
  }
}
