import { estimateRun, ESTIMATE_SAMPLES, moneyRangeText, type RunEstimate } from '../ledger/estimate.js';
import { formatMoneyExact } from '../ledger/money.js';
import { mergePriceSheet } from '../ledger/price-sheet.js';
import { stageSamples } from '../ledger/profiles.js';
import type { DeclaredCost, PriceSheet, RevenueModel } from '../ledger/schemas.js';
import type { Db } from '../lib/db/types.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { NumRange, RunEstimateView } from '../workflows/types.js';
import { LEDGER_PLUGIN, type ResolvedSpec } from './spec.js';

/** How many past profiles per plugin version are read (comparable ones are picked from them). */
const HISTORY_READ = ESTIMATE_SAMPLES * 4;

/**
 * Estimates a resolved spec from the ledger's history (ledger/estimate.ts says how), priced with
 * the configured sheet merged with the ledger stage's override, as the booking will be.
 */
export async function estimateSpec(
  r: ResolvedSpec,
  o: { registry: StageRegistry; db: Db; priceSheet: PriceSheet; excludeRunId?: string },
): Promise<RunEstimateView> {
  const ledgerStage = r.stages.find((s) => s.plugin === LEDGER_PLUGIN);
  const ledgerParams = ledgerStage ? (r.parsedParams[ledgerStage.id] as { priceSheet?: never; costs?: DeclaredCost[]; revenue: RevenueModel }) : undefined;
  const sheet = mergePriceSheet(o.priceSheet, ledgerParams?.priceSheet, 'priceSheet');
  const stages = [];
  // One read per plugin version, however many stages use it.
  const history = new Map<string, ReturnType<typeof stageSamples>>();
  const samplesOf = (plugin: string, version: string) => {
    const key = `${plugin}@${version}`;
    if (!history.has(key))
      history.set(key, stageSamples(o.db, plugin, version, { limit: HISTORY_READ, ...(o.excludeRunId ? { excludeRunId: o.excludeRunId } : {}) }));
    return history.get(key)!;
  };
  for (const s of r.stages) {
    const plugin = o.registry.get(s.plugin, s.pluginVersion);
    const params = r.parsedParams[s.id];
    stages.push({
      id: s.id,
      plugin: s.plugin,
      pluginVersion: s.pluginVersion,
      params,
      needs: s.needs,
      inputsFrom: [...new Set(Object.values(s.inputs))],
      ...(plugin?.estimateScale ? { scale: plugin.estimateScale } : {}),
      ...(plugin?.estimate ? { declare: (i: { bytes: number | undefined }) => plugin.estimate!(params, i) } : {}),
      samples: await samplesOf(s.plugin, s.pluginVersion),
    });
  }
  const est = estimateRun({
    stages,
    sheet,
    ...(ledgerStage && ledgerParams ? { ledger: { stageId: ledgerStage.id, costs: ledgerParams.costs ?? [], revenue: ledgerParams.revenue } } : {}),
  });
  return toView(est);
}

const seconds = (r: NumRange): NumRange => ({ expected: round(r.expected / 1000), low: round(r.low / 1000), high: round(r.high / 1000) });
const bytes = (r: NumRange): NumRange => ({ expected: Math.round(r.expected), low: Math.round(r.low), high: Math.round(r.high) });
const round = (n: number) => Math.round(n * 1000) / 1000;

function toView(e: RunEstimate): RunEstimateView {
  return {
    currency: e.currency,
    madeAt: new Date().toISOString(),
    complete: e.complete,
    unknownStages: e.unknownStages,
    durationSeconds: seconds(e.durationMs),
    meteredCost: moneyRangeText(e.metered),
    declaredCost: formatMoneyExact(e.declared),
    declaredCosts: e.declaredLines.map((l) => ({ category: l.category, description: l.description, amount: formatMoneyExact(l.amount) })),
    totalCost: moneyRangeText(e.totalCost),
    expectedRevenue: e.expectedRevenue === undefined ? null : formatMoneyExact(e.expectedRevenue),
    roi: e.roi ?? null,
    roiExplanation: e.roiExplanation ?? null,
    stages: e.stages.map((s) => ({
      stageId: s.stageId,
      plugin: s.plugin,
      pluginVersion: s.pluginVersion,
      basis: s.basis,
      detail: s.detail,
      samples: s.samples,
      sampleRuns: s.sampleRuns,
      ...(s.durationMs ? { durationSeconds: seconds(s.durationMs) } : {}),
      ...(s.bytesKept ? { bytesKept: bytes(s.bytesKept) } : {}),
      ...(s.cost
        ? {
            cost: {
              cpu: moneyRangeText(s.cost.cpu),
              gpu: moneyRangeText(s.cost.gpu),
              storage: moneyRangeText(s.cost.storage),
              total: moneyRangeText(s.cost.total),
            },
          }
        : {}),
    })),
  };
}
