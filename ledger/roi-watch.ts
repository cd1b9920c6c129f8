import type { Db } from '../lib/db/types.js';
import { divRound, formatMoneyExact, formatScaled, type Micros } from './money.js';
import { predictionRevenue } from './pricing.js';
import { loadRunRevenue, runTotals } from './repository.js';

/**
 * The realised-ROI watch. A run that declares `watch: { minRealisedRoi, window }` has every model
 * version it produced judged over a sliding window once the version is at least a window old:
 *
 *   realised ROI = (R_w − C·w/h) / (C·w/h)
 *
 * where R_w is the revenue of the predictions the version served in the last window (at the run's
 * pricePer1000), C the run's booked cost, w the window and h the revenue model's horizon: the
 * run's cost spread evenly over the horizon it was meant to pay back in. Computed exactly (no
 * float). Falling under the threshold is a crossing: counted once (an atomic state change, so two
 * API processes never both count it), recorded as an alert, and announced as a `roi.below` event;
 * rising to the threshold again re-arms it.
 */

export interface RoiWatch {
  runId: string;
  pipeline: string;
  /** Decimal ratio, e.g. "0.25" (25 %); 4 places at most. */
  minRealisedRoi: string;
  windowMs: number;
}

export interface RoiCheck {
  model: string;
  version: number;
  runId: string;
  pipeline: string;
  currency: string;
  /** 4-place decimal ratio. */
  realisedRoi: string;
  minRealisedRoi: string;
  windowMs: number;
  /** Revenue of the predictions served in the window. */
  revenue: string;
  /** The run's cost spread over the window (6 places). */
  costShare: string;
  predictions: number;
  below: boolean;
  /** Set when this check crossed under the threshold: the crossing's number for this version (1, 2, …). */
  crossing?: number;
}

export interface RoiAlert {
  id: string;
  model: string;
  version: number;
  runId: string;
  pipeline: string;
  crossing: number;
  realisedRoi: string;
  minRealisedRoi: string;
  windowMs: number;
  revenue: string;
  costShare: string;
  currency: string;
  /** Runs the roi.below event started (saved pipelines triggered by it). */
  startedRuns: string[];
  /** Whether the event has been emitted (an alert whose event could not be emitted is retried). */
  emitted: boolean;
  at: string;
}

const RATIO_SCALE = 10_000n;
const MS_PER_DAY = 86_400_000n;

/** Records the watch a run declared (once; a second call for the run changes nothing). */
export async function saveRoiWatch(db: Db, w: RoiWatch, now = new Date()): Promise<void> {
  await db.run(`INSERT INTO roi_watches (run_id, pipeline, min_roi, window_ms, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING`, [
    w.runId,
    w.pipeline,
    w.minRealisedRoi,
    w.windowMs,
    now.toISOString(),
  ]);
}

/** Judges every watched model version now; returns one check per version judged (crossings marked). */
export async function checkRoiWatches(db: Db, now = new Date()): Promise<RoiCheck[]> {
  const watches = await db.query<{ run_id: string; pipeline: string; min_roi: string; window_ms: string | number }>(
    'SELECT * FROM roi_watches ORDER BY run_id',
  );
  const out: RoiCheck[] = [];
  for (const w of watches) {
    const revenue = await loadRunRevenue(db, w.run_id);
    if (revenue?.model.kind !== 'per-prediction') continue; // not booked yet
    const totals = await runTotals(db, w.run_id);
    if (totals.cost <= 0n) continue;
    const windowMs = BigInt(w.window_ms);
    const horizonMs = BigInt(revenue.model.horizonDays) * MS_PER_DAY;
    const versions = await db.query<{ model: string; version: number | string; created_at: string }>(
      'SELECT model, version, created_at FROM model_versions WHERE run_id = ? ORDER BY model, version',
      [w.run_id],
    );
    for (const v of versions) {
      // A version younger than the window has not had a full window to earn in.
      if (now.getTime() - Date.parse(v.created_at) < Number(windowMs)) continue;
      const since = new Date(now.getTime() - Number(windowMs)).toISOString();
      const rows = await db.query<{ n: string | number | null }>(
        'SELECT CAST(SUM(count) AS TEXT) AS n FROM ledger_predictions WHERE run_id = ? AND model = ? AND version = ? AND at > ? AND at <= ?',
        [w.run_id, v.model, String(v.version), since, now.toISOString()],
      );
      const predictions = BigInt(rows[0]?.n ?? 0);
      const r: Micros = predictionRevenue(predictions, revenue.model.pricePer1000);
      // ROI × 10^4 = (R·h − C·w) × 10^4 / (C·w), exactly.
      const num = (r * horizonMs - totals.cost * windowMs) * RATIO_SCALE;
      const den = totals.cost * windowMs;
      const min = parseRatio(w.min_roi);
      const below = num < min * den;
      const roiScaled = divRound(num, den);
      const check: RoiCheck = {
        model: v.model,
        version: Number(v.version),
        runId: w.run_id,
        pipeline: w.pipeline,
        currency: revenue.currency,
        realisedRoi: formatScaled(roiScaled, 4),
        minRealisedRoi: w.min_roi,
        windowMs: Number(windowMs),
        revenue: formatMoneyExact(r),
        costShare: formatScaled(divRound(totals.cost * windowMs, horizonMs), 6),
        predictions: Number(predictions),
        below,
      };
      const crossing = await transition(db, check, now);
      if (crossing !== undefined) check.crossing = crossing;
      out.push(check);
    }
  }
  return out;
}

/** Where a watched model stands: the version judged last, whether it is below its watch, its realised ROI then. */
export interface RoiWatchState {
  model: string;
  version: number;
  below: boolean;
  /** 4-place decimal ratio (null before the first judgement recorded one). */
  realisedRoi: string | null;
  checkedAt: string;
}

/** The latest judged state of each watched model (its most recently checked version). */
export async function roiWatchStates(db: Db): Promise<RoiWatchState[]> {
  const rows = await db.query<{ model: string; version: string | number; below: number | string | boolean; last_roi: string | null; checked_at: string }>(
    'SELECT model, version, below, last_roi, checked_at FROM roi_watch_state ORDER BY model, checked_at, version',
  );
  const latest = new Map<string, RoiWatchState>();
  for (const r of rows) {
    latest.set(r.model, {
      model: r.model,
      version: Number(r.version),
      below: Number(r.below) === 1 || r.below === true,
      realisedRoi: r.last_roi,
      checkedAt: r.checked_at,
    });
  }
  return [...latest.values()];
}

/** Moves the version's state; returns the crossing number when this check is the one that crossed under. */
async function transition(db: Db, c: RoiCheck, now: Date): Promise<number | undefined> {
  const at = now.toISOString();
  const version = String(c.version);
  await db.run(
    `INSERT INTO roi_watch_state (model, version, run_id, below, crossings, last_roi, checked_at) VALUES (?, ?, ?, 0, 0, ?, ?) ON CONFLICT (model, version) DO NOTHING`,
    [c.model, version, c.runId, c.realisedRoi, at],
  );
  if (!c.below) {
    await db.run('UPDATE roi_watch_state SET below = 0, last_roi = ?, checked_at = ? WHERE model = ? AND version = ?', [c.realisedRoi, at, c.model, version]);
    return undefined;
  }
  return db.tx(async (tx) => {
    // Only the check that flips the flag counts the crossing (atomic in either database).
    const n = await tx.run(
      'UPDATE roi_watch_state SET below = 1, crossings = crossings + 1, last_roi = ?, checked_at = ? WHERE model = ? AND version = ? AND below = 0',
      [c.realisedRoi, at, c.model, version],
    );
    if (n === 0) {
      await tx.run('UPDATE roi_watch_state SET last_roi = ?, checked_at = ? WHERE model = ? AND version = ?', [c.realisedRoi, at, c.model, version]);
      return undefined;
    }
    const rows = await tx.query<{ crossings: number | string }>('SELECT crossings FROM roi_watch_state WHERE model = ? AND version = ?', [c.model, version]);
    const crossing = Number(rows[0]!.crossings);
    await tx.run(
      `INSERT INTO roi_alerts (id, model, version, run_id, pipeline, crossing, realised_roi, min_roi, window_ms, revenue, cost_share, currency, started_runs, emitted, at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', 0, ?)`,
      [
        alertId(c.model, c.version, crossing),
        c.model,
        version,
        c.runId,
        c.pipeline,
        crossing,
        c.realisedRoi,
        c.minRealisedRoi,
        c.windowMs,
        c.revenue,
        c.costShare,
        c.currency,
        at,
      ],
    );
    return crossing;
  });
}

export function alertId(model: string, version: number, crossing: number): string {
  return `roi.below/${model}/${version}/${crossing}`;
}

interface AlertRow {
  id: string;
  model: string;
  version: string;
  run_id: string;
  pipeline: string;
  crossing: number | string;
  realised_roi: string;
  min_roi: string;
  window_ms: number | string;
  revenue: string;
  cost_share: string;
  currency: string;
  started_runs: string;
  emitted: number | string;
  at: string;
}

const toAlert = (r: AlertRow): RoiAlert => ({
  id: r.id,
  model: r.model,
  version: Number(r.version),
  runId: r.run_id,
  pipeline: r.pipeline,
  crossing: Number(r.crossing),
  realisedRoi: r.realised_roi,
  minRealisedRoi: r.min_roi,
  windowMs: Number(r.window_ms),
  revenue: r.revenue,
  costShare: r.cost_share,
  currency: r.currency,
  startedRuns: JSON.parse(r.started_runs) as string[],
  emitted: Number(r.emitted) === 1,
  at: r.at,
});

/** Alerts, newest first (of one model when given). */
export async function listRoiAlerts(db: Db, o: { model?: string; limit?: number; pending?: boolean } = {}): Promise<RoiAlert[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  if (o.model !== undefined) {
    where.push('model = ?');
    args.push(o.model);
  }
  if (o.pending) where.push('emitted = 0');
  const rows = await db.query<AlertRow>(`SELECT * FROM roi_alerts ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY at DESC, id DESC LIMIT ?`, [
    ...args,
    o.limit ?? 100,
  ]);
  return rows.map(toAlert);
}

/** Marks an alert's event as emitted, with the runs it started. */
export async function markAlertEmitted(db: Db, id: string, startedRuns: string[]): Promise<void> {
  await db.run('UPDATE roi_alerts SET emitted = 1, started_runs = ? WHERE id = ?', [JSON.stringify(startedRuns), id]);
}

/** "0.25" → 2500 (× 10^4); "-1" → -10000. */
function parseRatio(t: string): bigint {
  const m = /^(-)?(\d+)(?:\.(\d{1,4}))?$/.exec(t.trim());
  if (!m) throw new RangeError(`not a ratio: ${t}`);
  const v = BigInt(m[2]!) * RATIO_SCALE + BigInt((m[3] ?? '').padEnd(4, '0') || '0');
  return m[1] ? -v : v;
}
