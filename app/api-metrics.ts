// The API process's metrics (job="capstan-api"): what it reads at scrape time from Temporal
// (runs, paused runs, the queues' slot keepers) and from the ledger (booked cost and realised
// revenue, the ROI watch), and the predictions it serves. Each source is read at most once per
// `cacheMs` however often Prometheus (or several of them) scrapes; a source that cannot be read
// leaves its metrics out of that scrape (capstan_scrape_source_up{source} says which) instead of
// failing the whole scrape. Names are a contract with the dashboards and alerts (docs/observability.md).
import type { Client } from '@temporalio/client';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { RunMetricsReader } from '../engine/run-metrics.js';
import { bookedTotals } from '../ledger/repository.js';
import { roiWatchStates } from '../ledger/roi-watch.js';
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import { cachedFor, microsToNumber } from '../lib/telemetry/metrics.js';
import type { SlotKeeperView } from '../workflows/gang.js';
import type { CapstanConfig } from './config.js';
import { queueSlots } from './workers.js';

export interface ApiMetricsOptions {
  registry: Registry;
  client: Client;
  taskQueues: CapstanConfig['taskQueues'];
  db: Db;
  logger: Logger;
  /** How long one read of a source serves scrapes (default 5 s). */
  cacheMs?: number;
}

/** What the API counts as it serves: predictions, by model and version. */
export interface ApiMetrics {
  predicted(model: string, version: number, count: number, seconds: number): void;
}

/** Prediction latencies: a small model answers in a millisecond, a cold load takes seconds. */
const PREDICT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createApiMetrics(o: ApiMetricsOptions): ApiMetrics {
  const registers = [o.registry];
  const cacheMs = o.cacheMs ?? 5_000;
  const sources = new Map<string, () => Promise<unknown>>();
  /** Reads a source (shared by its metrics within cacheMs); undefined, and logged, when it fails. */
  const source = <T>(name: string, read: () => Promise<T>) => {
    // A failure is logged once and kept for cacheMs like a result: a source that is down is tried once per window.
    const cached = cachedFor(cacheMs, () =>
      read().catch((e: unknown) => {
        o.logger.warn(`metrics: could not read ${name}; its metrics are left out of scrapes for ${cacheMs} ms`, {
          error: e instanceof Error ? e.message : String(e),
        });
        throw e;
      }),
    );
    const get = (): Promise<T | undefined> => cached().catch(() => undefined);
    sources.set(name, get);
    return get;
  };
  new Gauge({
    name: 'capstan_scrape_source_up',
    help: 'Whether a scrape-time source (temporal, slots, ledger) could be read for this scrape.',
    labelNames: ['source'] as const,
    registers,
    async collect() {
      // The same (cached) reads the source's metrics use in this scrape.
      for (const [name, get] of sources) this.set({ source: name }, (await get()) === undefined ? 0 : 1);
    },
  });

  const reader = new RunMetricsReader(o.client);
  const runs = source('temporal', () => reader.read());
  new Gauge({
    name: 'capstan_runs',
    help: 'Runs by pipeline and status (RUNNING, PAUSED, COMPLETED, FAILED, CANCELLED, TERMINATED, TIMED_OUT), from Temporal visibility.',
    labelNames: ['pipeline', 'status'] as const,
    registers,
    async collect() {
      this.reset();
      for (const c of (await runs())?.counts ?? []) this.set({ pipeline: c.pipeline, status: c.status }, c.count);
    },
  });
  new Gauge({
    name: 'capstan_run_paused_seconds',
    help: 'For each run paused now, how long since it paused.',
    labelNames: ['run_id', 'pipeline'] as const,
    registers,
    async collect() {
      this.reset();
      for (const p of (await runs())?.paused ?? []) this.set({ run_id: p.runId, pipeline: p.pipeline }, p.pausedSeconds);
    },
  });
  new Gauge({
    name: 'capstan_budget_paused_runs',
    help: 'Runs paused now because their budget has no room for the next attempt, by pipeline.',
    labelNames: ['pipeline'] as const,
    registers,
    async collect() {
      this.reset();
      const byPipeline = new Map<string, number>();
      for (const p of (await runs())?.paused ?? []) if (p.budget) byPipeline.set(p.pipeline, (byPipeline.get(p.pipeline) ?? 0) + 1);
      for (const [pipeline, n] of byPipeline) this.set({ pipeline }, n);
    },
  });

  // The slot keepers of the stage queues (what `queueSlots` answers; absent until a worker reports).
  const queues = [...new Set([o.taskQueues.cpu, o.taskQueues.gpu, ...(o.taskQueues.legacyCpu ? [o.taskQueues.legacyCpu] : [])])];
  const slots = source('slots', async () => {
    const views = await Promise.all(queues.map((q) => queueSlots(o.client, q)));
    return views.filter((v): v is SlotKeeperView => v !== undefined);
  });
  const slotGauge = (name: string, help: string, value: (v: SlotKeeperView, now: number) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['queue'] as const,
      registers,
      async collect() {
        this.reset();
        const now = Date.now();
        for (const v of (await slots()) ?? []) this.set({ queue: v.queue }, value(v, now));
      },
    });
  slotGauge('capstan_slot_capacity', "Slots the queue's live workers reported to its slot keeper.", (v) => v.capacity);
  slotGauge('capstan_slot_free', 'Slots free at the slot keeper.', (v) => v.free);
  slotGauge('capstan_slot_queue_depth', 'Gangs waiting for slots at the slot keeper.', (v) => v.waiting.length);
  slotGauge('capstan_slot_workers', 'Workers reporting slots to the slot keeper.', (v) => v.workers.length);
  slotGauge('capstan_slot_wait_oldest_seconds', 'How long the oldest waiting gang has waited (0: none waits).', (v, now) =>
    v.waiting.reduce((m, w) => Math.max(m, (now - Date.parse(w.since)) / 1000), 0),
  );

  // The ledger: net booked amounts, summed exactly in the database, as counters in the ledger's currency.
  const ledger = source('ledger', async () => ({
    cost: await bookedTotals(o.db, 'cost'),
    revenue: await bookedTotals(o.db, 'realised_revenue'),
    roi: await roiWatchStates(o.db),
  }));
  new Counter({
    name: 'capstan_ledger_cost_total',
    help: 'Cost booked in the ledger, by pipeline, resource (category) and currency (net of reversals).',
    labelNames: ['pipeline', 'resource', 'currency'] as const,
    registers,
    async collect() {
      this.reset();
      for (const t of (await ledger())?.cost ?? [])
        this.inc({ pipeline: t.pipeline, resource: t.category, currency: t.currency }, Math.max(0, microsToNumber(t.amount)));
    },
  });
  new Counter({
    name: 'capstan_ledger_revenue_total',
    help: 'Realised revenue booked in the ledger (served predictions), by pipeline and currency.',
    labelNames: ['pipeline', 'currency'] as const,
    registers,
    async collect() {
      this.reset();
      const sums = new Map<string, bigint>();
      for (const t of (await ledger())?.revenue ?? [])
        sums.set(`${t.pipeline}\u0000${t.currency}`, (sums.get(`${t.pipeline}\u0000${t.currency}`) ?? 0n) + t.amount);
      for (const [k, amount] of sums) {
        const [pipeline, currency] = k.split('\u0000') as [string, string];
        this.inc({ pipeline, currency }, Math.max(0, microsToNumber(amount)));
      }
    },
  });
  new Gauge({
    name: 'capstan_roi_watch_below',
    help: "1 while a watched model's realised ROI (its latest judged version) is below its watch, else 0.",
    labelNames: ['model'] as const,
    registers,
    async collect() {
      this.reset();
      for (const s of (await ledger())?.roi ?? []) this.set({ model: s.model }, s.below ? 1 : 0);
    },
  });
  new Gauge({
    name: 'capstan_roi_realised',
    help: "A watched model's realised ROI at its latest judgement (a ratio: 0.25 is 25 %).",
    labelNames: ['model'] as const,
    registers,
    async collect() {
      this.reset();
      for (const s of (await ledger())?.roi ?? []) if (s.realisedRoi !== null) this.set({ model: s.model }, Number(s.realisedRoi));
    },
  });

  const predictions = new Counter({
    name: 'capstan_predictions_total',
    help: 'Predictions served (rows of the request batches), by model and version.',
    labelNames: ['model', 'version'] as const,
    registers,
  });
  const latency = new Histogram({
    name: 'capstan_prediction_duration_seconds',
    help: 'Time to answer one prediction request (HTTP route or GraphQL predict), by model and version.',
    labelNames: ['model', 'version'] as const,
    buckets: PREDICT_BUCKETS,
    registers,
  });
  return {
    predicted(model, version, count, seconds) {
      const labels = { model, version: String(version) };
      predictions.inc(labels, count);
      latency.observe(labels, seconds);
    },
  };
}
