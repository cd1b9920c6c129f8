import type { Db } from '../lib/db/types.js';
import { canonical } from '../lib/canonical.js';

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
    [
      p.runId,
      p.stageId,
      p.pipeline,
      p.plugin,
      p.pluginVersion,
      JSON.stringify(canonical(p.params ?? {})),
      Math.round(p.inputBytes),
      Math.round(p.outputBytes),
      Math.round(p.durationMs),
      now.toISOString(),
    ],
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
 * metered usage (summed as `usageTotals` does). A profile whose run has no usage lines for the
 * stage (usage not flushed yet) is left out. One query.
 */
export async function stageSamples(db: Db, plugin: string, pluginVersion: string, o: { limit?: number; excludeRunId?: string } = {}): Promise<StageSample[]> {
  const rows = await db.query<ProfileRow & { cpu: string; gpu: string; kept: string | null; written: string; attempts: number | string }>(
    `WITH p AS (SELECT * FROM stage_profiles WHERE plugin = ? AND plugin_version = ? AND run_id <> ? ORDER BY recorded_at DESC LIMIT ?)
     SELECT p.*, u.cpu, u.gpu, u.kept, u.written, u.attempts
     FROM p JOIN (SELECT run_id, stage_id,
             CAST(SUM(CASE WHEN metered = 1 THEN cpu_ms WHEN resource = 'cpu' THEN device_ms ELSE 0 END) AS TEXT) AS cpu,
             CAST(SUM(CASE WHEN metered = 1 THEN gpu_ms WHEN resource = 'gpu' THEN device_ms ELSE 0 END) AS TEXT) AS gpu,
             CAST(MAX(bytes_kept) AS TEXT) AS kept,
             CAST(SUM(CASE WHEN bytes_kept IS NULL THEN bytes_written ELSE 0 END) AS TEXT) AS written,
             COUNT(*) AS attempts
           FROM ledger_usage WHERE run_id IN (SELECT run_id FROM p) GROUP BY run_id, stage_id) u
       ON u.run_id = p.run_id AND u.stage_id = p.stage_id
     ORDER BY p.recorded_at DESC`,
    [plugin, pluginVersion, o.excludeRunId ?? '', o.limit ?? 20],
  );
  return rows.map((r) => {
    const kept = Number(r.kept ?? 0);
    const written = Number(r.written);
    return {
      runId: r.run_id,
      stageId: r.stage_id,
      pipeline: r.pipeline,
      plugin: r.plugin,
      pluginVersion: r.plugin_version,
      params: JSON.parse(r.params_json),
      inputBytes: Number(r.input_bytes),
      outputBytes: Number(r.output_bytes),
      durationMs: Number(r.duration_ms),
      cpuMs: Number(r.cpu),
      gpuMs: Number(r.gpu),
      bytesKept: Math.max(kept, written),
      attempts: Number(r.attempts),
      recordedAt: r.recorded_at,
    };
  });
}
