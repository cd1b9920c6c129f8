import type { Db, Migration } from '../lib/db/types.js';

/**
 * What the worker records about every stage attempt, so a run can be drawn long after Temporal
 * has dropped its history: when each attempt (Temporal retry, operator retry, replica, reduce)
 * started and ended, and the per-epoch metrics training stages reported. Rows are keyed by
 * (run, activity id, attempt[, epoch]); writing the same row again updates it (idempotent).
 */
export const stageRecordMigrations: Migration[] = [
  {
    id: 'records/0001-stage-attempts',
    sql: `CREATE TABLE IF NOT EXISTS stage_attempts (
      run_id TEXT NOT NULL,
      activity_id TEXT NOT NULL,
      attempt INTEGER NOT NULL,
      stage_id TEXT NOT NULL,
      round INTEGER NOT NULL,
      replica INTEGER NOT NULL,
      role TEXT NOT NULL,
      started_at TEXT NOT NULL,
      closed_at TEXT,
      outcome TEXT NOT NULL,
      error TEXT,
      PRIMARY KEY (run_id, activity_id, attempt)
    )`,
  },
  {
    id: 'records/0002-stage-epochs',
    sql: `CREATE TABLE IF NOT EXISTS stage_epochs (
      run_id TEXT NOT NULL,
      activity_id TEXT NOT NULL,
      attempt INTEGER NOT NULL,
      epoch INTEGER NOT NULL,
      stage_id TEXT NOT NULL,
      round INTEGER NOT NULL,
      replica INTEGER NOT NULL,
      metrics TEXT NOT NULL,
      recorded_at TEXT NOT NULL,
      PRIMARY KEY (run_id, activity_id, attempt, epoch)
    )`,
  },
];

/** Which activity of a stage an attempt belongs to. */
export interface AttemptKey {
  runId: string;
  /** Temporal activity id: stage:<id>[#<operator retry>][:replica-<i>|:reduce]. */
  activityId: string;
  /** Temporal attempt number of that activity, from 1. */
  attempt: number;
  stageId: string;
}

export type AttemptOutcome = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface AttemptRecord extends AttemptKey {
  /** Operator retry number (0 for the first try). */
  round: number;
  /** Replica index, or -1 for a stage's only activity and its reduce. */
  replica: number;
  role: 'run' | 'reduce';
  startedAt: string;
  closedAt: string | null;
  outcome: AttemptOutcome;
  error: string | null;
}

export interface EpochRecord extends AttemptKey {
  round: number;
  replica: number;
  epoch: number;
  /** Every finite number reported for the epoch, e.g. trainLoss, trainAccuracy, valLoss, valAccuracy. */
  metrics: Record<string, number>;
  recordedAt: string;
}

/** Where the stage activities write attempt and epoch records (a failed write never fails a stage). */
export interface StageRecorder {
  attemptStarted(a: AttemptKey & { startedAt: string }): Promise<void>;
  attemptClosed(a: AttemptKey & { closedAt: string; outcome: AttemptOutcome; error?: string }): Promise<void>;
  epoch(e: AttemptKey & { epoch: number; metrics: Record<string, number> }): Promise<void>;
}

/** Operator retry number, replica index and role from a stage activity id. */
export function parseActivityId(activityId: string): { round: number; replica: number; role: 'run' | 'reduce' } {
  const round = /#(\d+)/.exec(activityId);
  const replica = /:replica-(\d+)$/.exec(activityId);
  return { round: round ? Number(round[1]) : 0, replica: replica ? Number(replica[1]) : -1, role: activityId.endsWith(':reduce') ? 'reduce' : 'run' };
}

/** The recorder over the database (SQLite or PostgreSQL, migrated by the composition root). */
export function createStageRecorder(db: Db): StageRecorder {
  return {
    async attemptStarted(a) {
      const p = parseActivityId(a.activityId);
      await db.run(
        `INSERT INTO stage_attempts (run_id, activity_id, attempt, stage_id, round, replica, role, started_at, closed_at, outcome, error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'running', NULL)
         ON CONFLICT (run_id, activity_id, attempt) DO UPDATE SET started_at = excluded.started_at, closed_at = NULL, outcome = 'running', error = NULL`,
        [a.runId, a.activityId, a.attempt, a.stageId, p.round, p.replica, p.role, a.startedAt],
      );
    },
    async attemptClosed(a) {
      await db.run(`UPDATE stage_attempts SET closed_at = ?, outcome = ?, error = ? WHERE run_id = ? AND activity_id = ? AND attempt = ?`, [
        a.closedAt,
        a.outcome,
        a.error ? a.error.slice(0, 2000) : null,
        a.runId,
        a.activityId,
        a.attempt,
      ]);
    },
    async epoch(e) {
      const p = parseActivityId(e.activityId);
      await db.run(
        `INSERT INTO stage_epochs (run_id, activity_id, attempt, epoch, stage_id, round, replica, metrics, recorded_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (run_id, activity_id, attempt, epoch) DO UPDATE SET metrics = excluded.metrics, recorded_at = excluded.recorded_at`,
        [e.runId, e.activityId, e.attempt, e.epoch, e.stageId, p.round, p.replica, JSON.stringify(e.metrics), new Date().toISOString()],
      );
    },
  };
}

/** The columns both tables key their rows by. */
interface KeyRow {
  run_id: string;
  activity_id: string;
  attempt: number | string;
  stage_id: string;
  round: number | string;
  replica: number | string;
}

/** Those columns as record fields (numbers come back as strings from PostgreSQL). */
function keyOf(r: KeyRow) {
  return { runId: r.run_id, activityId: r.activity_id, attempt: Number(r.attempt), stageId: r.stage_id, round: Number(r.round), replica: Number(r.replica) };
}

interface AttemptRow extends KeyRow {
  role: 'run' | 'reduce';
  started_at: string;
  closed_at: string | null;
  outcome: AttemptOutcome;
  error: string | null;
}

/** Every recorded attempt of a run, in start order. */
export async function listAttempts(db: Db, runId: string): Promise<AttemptRecord[]> {
  const rows = await db.query<AttemptRow>('SELECT * FROM stage_attempts WHERE run_id = ? ORDER BY started_at, activity_id, attempt', [runId]);
  return rows.map((r) => ({
    ...keyOf(r),
    role: r.role,
    startedAt: r.started_at,
    closedAt: r.closed_at,
    outcome: r.outcome,
    error: r.error,
  }));
}

/** Every recorded epoch of a run, by stage, operator retry, attempt, replica and epoch. */
export async function listEpochs(db: Db, runId: string): Promise<EpochRecord[]> {
  const rows = await db.query<KeyRow & { epoch: number | string; metrics: string; recorded_at: string }>(
    'SELECT * FROM stage_epochs WHERE run_id = ? ORDER BY stage_id, round, attempt, replica, epoch',
    [runId],
  );
  return rows.map((r) => ({
    ...keyOf(r),
    epoch: Number(r.epoch),
    metrics: JSON.parse(r.metrics) as Record<string, number>,
    recordedAt: r.recorded_at,
  }));
}

/** Metric names that are positions, not measurements. */
const NOT_METRICS = new Set(['epoch', 'step', 'round', 'rounds', 'epochs']);

/** The finite numbers of an object, without position fields; undefined when there are none. */
export function numericMetrics(v: unknown): Record<string, number> | undefined {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v)) if (typeof x === 'number' && Number.isFinite(x) && !NOT_METRICS.has(k)) out[k] = x;
  return Object.keys(out).length ? out : undefined;
}

/**
 * Per-epoch metrics from what a stage reports while it trains:
 * - heartbeat details with an integer `epoch` and measurements (`{ epoch: 3, trainLoss: 0.2, … }`);
 * - a log line `epoch <n>/<total>` (or `fine-tune epoch <n>/<total>`) whose fields are measurements.
 */
export function epochFromHeartbeat(d: unknown): { epoch: number; metrics: Record<string, number> } | undefined {
  if (!d || typeof d !== 'object') return undefined;
  const epoch = (d as { epoch?: unknown }).epoch;
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 1) return undefined;
  const metrics = numericMetrics(d);
  return metrics ? { epoch, metrics } : undefined;
}

export function epochFromLog(message: string, meta: unknown): { epoch: number; metrics: Record<string, number> } | undefined {
  const m = /(?:^|\s)epoch (\d+)\/\d+\b/.exec(message);
  if (!m) return undefined;
  const metrics = numericMetrics(meta);
  return metrics ? { epoch: Number(m[1]), metrics } : undefined;
}

/** Per-epoch metrics a stage put in its final metrics as epochNN<Name> (e.g. epoch03ValAccuracy). */
export function epochsFromMetrics(metrics: Record<string, unknown>): Map<number, Record<string, number>> {
  const out = new Map<number, Record<string, number>>();
  for (const [k, v] of Object.entries(metrics)) {
    const m = /^epoch(\d+)([A-Z]\w*)$/.exec(k);
    if (!m || typeof v !== 'number' || !Number.isFinite(v)) continue;
    const name = m[2]!.charAt(0).toLowerCase() + m[2]!.slice(1);
    const e = Number(m[1]);
    out.set(e, { ...(out.get(e) ?? {}), [name]: v });
  }
  return out;
}
