import { canonical } from '../lib/canonical.js';
import { formatMoneyExact, type Micros } from './money.js';
import type { StageSample } from './profiles.js';
import { computeRoi, priceDeclared, priceExpectedRevenue, priceUsage } from './pricing.js';
import type { DeclaredCost, PriceSheet, RevenueModel } from './schemas.js';
import type { DeclaredEstimate, EstimateScale } from './declared-estimate.js';

export type { DeclaredEstimate, EstimateScale } from './declared-estimate.js';

/**
 * Estimates for a pipeline spec before it runs. Pure: the caller loads past samples. Per stage,
 * the basis is, in order:
 *  1. history: past runs of the same plugin version whose params equal this stage's except for
 *     the params the plugin names as scaling (`estimateScale`), scaled linearly: compute time
 *     and duration by work × data × input size, storage and output size by data × input size;
 *     the median of the newest comparable runs (up to 5), the range their min–max;
 *  2. plugin: the plugin's own `estimate(params, inputs)`;
 *  3. unknown: no number at all (totals then say they are incomplete).
 */

export interface EstimateStageInput {
  id: string;
  plugin: string;
  pluginVersion: string;
  /** Params with the plugin's defaults applied. */
  params: unknown;
  needs: string[];
  /** Stage ids whose outputs this stage reads. */
  inputsFrom: string[];
  scale?: EstimateScale;
  declare?: (inputs: { bytes: number | undefined }) => DeclaredEstimate | undefined;
  /** Past successful runs of the same plugin version, newest first. */
  samples: StageSample[];
}

export interface Range {
  expected: number;
  low: number;
  high: number;
}

export interface MoneyRange {
  expected: Micros;
  low: Micros;
  high: Micros;
}

export type EstimateBasis = 'history' | 'plugin' | 'unknown';

export interface StageEstimate {
  stageId: string;
  plugin: string;
  pluginVersion: string;
  basis: EstimateBasis;
  /** How the numbers were made, in words (which runs, which scale factors). */
  detail: string;
  /** Past runs used (history basis). */
  samples: number;
  /** Runs the samples came from, newest first. */
  sampleRuns: string[];
  durationMs?: Range;
  cpuMs?: Range;
  gpuMs?: Range;
  bytesKept?: Range;
  outputBytes?: Range;
  cost?: { cpu: MoneyRange; gpu: MoneyRange; storage: MoneyRange; total: MoneyRange };
}

export interface RunEstimate {
  currency: string;
  stages: StageEstimate[];
  /** True when every stage has an estimate. */
  complete: boolean;
  unknownStages: string[];
  /** The longest chain of stages (stages in parallel overlap), each with STAGE_OVERHEAD_MS; unknown stages count only that. */
  durationMs: Range;
  /** Metered cost of the stages with an estimate. */
  metered: MoneyRange;
  /** Costs the ledger stage declares (people, data, labelling). */
  declared: Micros;
  declaredLines: { category: string; description: string; amount: Micros }[];
  /** metered + declared. */
  totalCost: MoneyRange;
  expectedRevenue?: Micros;
  /** ROI = (R − C) / C at the expected cost, and at the high cost (low) and low cost (high); undefined with its reason when it cannot be given. */
  roi?: { expected: string; low: string; high: string };
  roiExplanation?: string;
}

/**
 * What the orchestration adds per stage on the longest chain: the gap between one stage's end and
 * the next one's start (about 52 ms median, 124 ms p95 measured: BENCHMARKS.md "Orchestration")
 * plus the run's own start, rounded up.
 */
export const STAGE_OVERHEAD_MS = 150;

/** Newest comparable past runs used per stage. */
export const ESTIMATE_SAMPLES = 5;
/** With fewer than 3 samples the range is widened by this fraction each way. */
const THIN_HISTORY_MARGIN = 0.25;
const PLUGIN_RANGE = { low: 0.5, high: 2 };

export function estimateRun(o: {
  stages: EstimateStageInput[];
  sheet: PriceSheet;
  ledger?: { stageId: string; costs: DeclaredCost[]; revenue: RevenueModel };
}): RunEstimate {
  const byId = new Map<string, StageEstimate>();
  const stages: StageEstimate[] = [];
  for (const s of o.stages) {
    const producers = s.inputsFrom.map((id) => byId.get(id));
    const inputBytes = producers.length && producers.every((p) => p?.outputBytes) ? producers.reduce((n, p) => n + p!.outputBytes!.expected, 0) : undefined;
    const e = estimateStage(s, inputBytes, o.sheet);
    byId.set(s.id, e);
    stages.push(e);
  }
  const unknownStages = stages.filter((s) => s.basis === 'unknown').map((s) => s.stageId);
  const sum = (pick: (s: StageEstimate) => MoneyRange | undefined): MoneyRange => {
    const r: MoneyRange = { expected: 0n, low: 0n, high: 0n };
    for (const s of stages) {
      const m = pick(s);
      if (m) {
        r.expected += m.expected;
        r.low += m.low;
        r.high += m.high;
      }
    }
    return r;
  };
  const metered = sum((s) => s.cost?.total);
  const declaredLines = o.ledger ? priceDeclared(o.ledger.costs, o.ledger.stageId) : [];
  const declared = declaredLines.reduce((n, l) => n + l.amount, 0n);
  const totalCost = { expected: metered.expected + declared, low: metered.low + declared, high: metered.high + declared };
  const est: RunEstimate = {
    currency: o.sheet.currency,
    stages,
    complete: unknownStages.length === 0,
    unknownStages,
    durationMs: criticalPath(o.stages, byId),
    metered,
    declared,
    declaredLines: declaredLines.map((l) => ({ category: l.category, description: l.description, amount: l.amount })),
    totalCost,
  };
  if (o.ledger) est.expectedRevenue = priceExpectedRevenue(o.ledger.revenue, o.ledger.stageId).amount;
  if (!o.ledger) est.roiExplanation = 'the spec has no core:roi-ledger stage, so no revenue is declared';
  else if (unknownStages.length)
    est.roiExplanation = `stage(s) ${unknownStages.join(', ')} have no estimate, so the cost is incomplete and an ROI would be a guess`;
  else {
    const r = est.expectedRevenue!;
    const at = (c: Micros) => computeRoi(r, c);
    const [e, lo, hi] = [at(totalCost.expected), at(totalCost.high), at(totalCost.low)];
    if (e.roi === null || lo.roi === null || hi.roi === null)
      est.roiExplanation = e.explanation ?? 'the estimated cost is zero, so ROI = (R − C) / C is undefined';
    else est.roi = { expected: e.roi, low: lo.roi, high: hi.roi };
  }
  return est;
}

function estimateStage(s: EstimateStageInput, inputBytes: number | undefined, sheet: PriceSheet): StageEstimate {
  const base = { stageId: s.id, plugin: s.plugin, pluginVersion: s.pluginVersion };
  const comparable: { sample: StageSample; work: number; data: number; notes: string[] }[] = [];
  let others = 0;
  for (const sample of s.samples) {
    const f = scaleFactors(s, sample, inputBytes);
    if (!f) {
      others++;
      continue;
    }
    comparable.push({ sample, ...f });
    if (comparable.length === ESTIMATE_SAMPLES) break;
  }
  if (comparable.length) {
    const pick = (fn: (c: (typeof comparable)[number]) => number) => range(comparable.map(fn), comparable.length < 3 ? THIN_HISTORY_MARGIN : 0);
    const est = {
      durationMs: pick((c) => c.sample.durationMs * c.work),
      cpuMs: pick((c) => c.sample.cpuMs * c.work),
      gpuMs: pick((c) => c.sample.gpuMs * c.work),
      bytesKept: pick((c) => c.sample.bytesKept * c.data),
      outputBytes: pick((c) => c.sample.outputBytes * c.data),
    };
    const notes = [...new Set(comparable.flatMap((c) => c.notes))];
    const detail =
      `${comparable.length} past run(s) of ${s.plugin}@${s.pluginVersion} with comparable params (${comparable.map((c) => c.sample.runId).join(', ')})` +
      (notes.length ? `, scaled: ${notes.join('; ')}` : ', not scaled (same params and input size)') +
      (comparable.length < 3 ? `; range widened ±${THIN_HISTORY_MARGIN * 100}% for thin history` : '; range = min–max of the runs');
    return {
      ...base,
      basis: 'history',
      detail,
      samples: comparable.length,
      sampleRuns: comparable.map((c) => c.sample.runId),
      ...est,
      cost: price(s.id, est, sheet),
    };
  }
  const declared = s.declare?.({ bytes: inputBytes });
  if (declared) {
    const r = (v: number | undefined): Range => ({ expected: v ?? 0, low: (v ?? 0) * PLUGIN_RANGE.low, high: (v ?? 0) * PLUGIN_RANGE.high });
    const est = {
      durationMs: r(declared.durationSeconds * 1000),
      cpuMs: r(declared.cpuSeconds * 1000),
      gpuMs: r((declared.gpuSeconds ?? 0) * 1000),
      bytesKept: r(declared.bytesKept),
      outputBytes: r(declared.outputBytes),
    };
    return {
      ...base,
      basis: 'plugin',
      detail: `no comparable past run; the plugin's own estimate for these params${inputBytes === undefined ? '' : ` and ${inputBytes} input bytes`}, range ×${PLUGIN_RANGE.low}–×${PLUGIN_RANGE.high}`,
      samples: 0,
      sampleRuns: [],
      ...est,
      cost: price(s.id, est, sheet),
    };
  }
  return {
    ...base,
    basis: 'unknown',
    detail:
      (s.samples.length === 0
        ? `no past run of ${s.plugin}@${s.pluginVersion}`
        : `${others} past run(s) of ${s.plugin}@${s.pluginVersion}, none with comparable params`) + ', and the plugin declares no estimate',
    samples: 0,
    sampleRuns: [],
  };
}

/** Scale factors from a past run to this stage, or undefined when its params are not comparable. */
function scaleFactors(s: EstimateStageInput, sample: StageSample, inputBytes: number | undefined): { work: number; data: number; notes: string[] } | undefined {
  const work = s.scale?.work ?? [];
  const data = s.scale?.data ?? [];
  const skip = [...work, ...data, ...(s.scale?.ignore ?? [])];
  if (JSON.stringify(canonical(omit(s.params, skip))) !== JSON.stringify(canonical(omit(sample.params, skip)))) return undefined;
  const notes: string[] = [];
  const ratio = (k: string): number | undefined => {
    const now = get(s.params, k);
    const then = get(sample.params, k);
    if (now === then) return 1;
    if (typeof now === 'number' && typeof then === 'number' && now > 0 && then > 0) {
      notes.push(`×${round(now / then)} by ${k} ${then}→${now}`);
      return now / then;
    }
    return undefined;
  };
  let w = 1;
  let d = 1;
  for (const k of work) {
    const r = ratio(k);
    if (r === undefined) return undefined;
    w *= r;
  }
  for (const k of data) {
    const r = ratio(k);
    if (r === undefined) return undefined;
    d *= r;
  }
  if (s.inputsFrom.length && inputBytes !== undefined && sample.inputBytes > 0 && inputBytes !== sample.inputBytes) {
    const r = inputBytes / sample.inputBytes;
    notes.push(`×${round(r)} by input size ${sample.inputBytes}→${Math.round(inputBytes)} bytes`);
    d *= r;
  } else if (s.inputsFrom.length && inputBytes === undefined) notes.push('input size not known before the run, taken as in the past run');
  return { work: w * d, data: d, notes };
}

function price(stageId: string, e: { cpuMs: Range; gpuMs: Range; bytesKept: Range }, sheet: PriceSheet): NonNullable<StageEstimate['cost']> {
  const at = (k: keyof Range) => {
    const lines = priceUsage([{ stageId, cpuMs: big(e.cpuMs[k]), gpuMs: big(e.gpuMs[k]), wallMs: 0n, bytesKept: big(e.bytesKept[k]), attempts: 1 }], sheet);
    const by = (c: string) => lines.filter((l) => l.category === c).reduce((n, l) => n + l.amount, 0n);
    return { cpu: by('cpu'), gpu: by('gpu'), storage: by('storage') };
  };
  const [x, lo, hi] = [at('expected'), at('low'), at('high')];
  const mr = (c: 'cpu' | 'gpu' | 'storage'): MoneyRange => ({ expected: x[c], low: lo[c], high: hi[c] });
  const cpu = mr('cpu');
  const gpu = mr('gpu');
  const storage = mr('storage');
  return {
    cpu,
    gpu,
    storage,
    total: { expected: cpu.expected + gpu.expected + storage.expected, low: cpu.low + gpu.low + storage.low, high: cpu.high + gpu.high + storage.high },
  };
}

/** Longest chain of stage durations through `needs` (expected, low and high each on their own). */
function criticalPath(stages: EstimateStageInput[], est: Map<string, StageEstimate>): Range {
  const end = new Map<string, Range>();
  let last: Range = { expected: 0, low: 0, high: 0 };
  for (const s of stages) {
    const d = est.get(s.id)?.durationMs ?? { expected: 0, low: 0, high: 0 };
    const own = { expected: d.expected + STAGE_OVERHEAD_MS, low: d.low + STAGE_OVERHEAD_MS, high: d.high + STAGE_OVERHEAD_MS };
    const start = { expected: 0, low: 0, high: 0 };
    for (const n of s.needs) {
      const e = end.get(n);
      if (!e) continue;
      start.expected = Math.max(start.expected, e.expected);
      start.low = Math.max(start.low, e.low);
      start.high = Math.max(start.high, e.high);
    }
    const r = { expected: start.expected + own.expected, low: start.low + own.low, high: start.high + own.high };
    end.set(s.id, r);
    last = { expected: Math.max(last.expected, r.expected), low: Math.max(last.low, r.low), high: Math.max(last.high, r.high) };
  }
  return last;
}

function range(values: number[], margin: number): Range {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  const median = sorted.length % 2 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { expected: median, low: sorted[0]! * (1 - margin), high: sorted[sorted.length - 1]! * (1 + margin) };
}

const big = (n: number): bigint => BigInt(Math.max(0, Math.round(n)));
const round = (n: number): string => String(Math.round(n * 1000) / 1000);

function get(v: unknown, key: string): unknown {
  return v && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
}

function omit(v: unknown, keys: string[]): unknown {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return v;
  const out = { ...(v as Record<string, unknown>) };
  for (const k of keys) delete out[k];
  return out;
}

/** Money fields of an estimate as exact decimal strings (for the API). */
export function moneyRangeText(m: MoneyRange): { expected: string; low: string; high: string } {
  return { expected: formatMoneyExact(m.expected), low: formatMoneyExact(m.low), high: formatMoneyExact(m.high) };
}
