import type { Db } from '../lib/db/types.js';
import { canonical } from '../lib/canonical.js';
import { usageTotals } from './repository.js';

/**
 * What one successful stage of a past run looked like: the facts an estimate scales from. Its
 * usage (every attempt and replica, failed ones included) is read from `ledger_usage`.
 */
export interface StageProfile {
  runId: string;
  stageId: string;
  pipeline: string;
  plugin: string;
  pluginVersion: string;
  /** The params the stage ran with, after the plugin's defaults were applied. */
  params: unknown;
  /** Bytes of the artifacts it read. */
  inputBytes: number;
  /** Bytes of the artifacts it produced. */
  outputBytes: number;
  /** From the stage's start in the workflow to its success (retries, replicas and slot waits included). */
  durationMs: number;
}

/** A profile with the usage its run metered for the stage. */
export interface StageSample extends StageProfile {
  cpuMs: number;
  gpuMs: number;
  bytesKept: number;
  attempts: number;
  recordedAt: string;
}

/** Records (or, after an operator retry, replaces) the profile of a stage that succeeded. */
export async function recordStageProfile(db: Db, p: StageProfile, now = new Date()): Promise<void> {
  await db.run(
    `INSERT INTO stage_profiles (run_id, stage_id, pipeline, plugin, plugin_version, params_json, input_bytes, output_bytes, duration_ms, recorded_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (run_id, stage_id) DO UPDATE SET plugin_version = excluded.plugin_version, params_json = excluded.params_json,
       input_bytes = excluded.input_bytes, output_bytes = excluded.output_bytes, duration_ms = excluded.duration_ms, recorded_at = excluded.recorded_at`,
    [p.runId, p.stageId, p.pipeline, p.plugin, p.pluginVersion, JSON.stringify(canonical(p.params ?? {})), Math.round(p.inputBytes), Math.round(p.outputBytes), Math.round(p.durationMs), now.toISOString()],
  );
}

interface ProfileRow {
  run_id: string;
  stage_id: string;
  pipeline: string;
  plugin: string;
  plugin_version: string;
  params_json: string;
  input_bytes: string | number;
  output_bytes: string | number;
  duration_ms: string | number;
  recorded_at: string;
}

/**
 * The newest `limit` profiles of a plugin version (other runs than `excludeRunId`), each with its
 * metered usage. A profile whose run has no usage lines (usage not flushed yet) is left out.
 */
export async function stageSamples(db: Db, plugin: string, pluginVersion: string, o: { limit?: number; excludeRunId?: string } = {}): Promise<StageSample[]> {
  const rows = await db.query<ProfileRow>(
    `SELECT * FROM stage_profiles WHERE plugin = ? AND plugin_version = ? AND run_id <> ? ORDER BY recorded_at DESC LIMIT ?`,
    [plugin, pluginVersion, o.excludeRunId ?? '', o.limit ?? 20],
  );
  const out: StageSample[] = [];
  for (const r of rows) {
    const usage = (await usageTotals(db, r.run_id)).find((u) => u.stageId === r.stage_id);
    if (!usage) continue;
    out.push({
      runId: r.run_id,
      stageId: r.stage_id,
      pipeline: r.pipeline,
      plugin: r.plugin,
      pluginVersion: r.plugin_version,
      params: JSON.parse(r.params_json),
      inputBytes: Number(r.input_bytes),
      outputBytes: Number(r.output_bytes),
      durationMs: Number(r.duration_ms),
      cpuMs: Number(usage.cpuMs),
      gpuMs: Number(usage.gpuMs),
      bytesKept: Number(usage.bytesKept),
      attempts: usage.attempts,
      recordedAt: r.recorded_at,
    });
  }
  return out;
}
