import type { Db } from '../../lib/db/types.js';
import { createPredictionsHook } from '../../ledger/index.js';
import { ModelRegistry } from '../../serving/registry.js';
import type { ApiModule } from '../module.js';
import { ledgerModule } from './ledger.js';
import { createModelsModule } from './models.js';
import { operationsModule } from './operations.js';

/**
 * The API modules beyond the core (runs, plugins): operations, ledger, models. Predictions
 * served are booked in the ledger as realised revenue of the run that produced the model.
 */
export function apiModules(opts: { db: Db; modelRefreshMs?: number }): ApiModule[] {
  const registry = new ModelRegistry(opts.db);
  const onPredictions = createPredictionsHook(opts.db, { resolveRunId: async (m, v) => (await registry.getVersion(m, v))?.runId });
  return [
    operationsModule(),
    ledgerModule(),
    createModelsModule({ onPredictions, ...(opts.modelRefreshMs !== undefined ? { refreshIntervalMs: opts.modelRefreshMs } : {}) }),
  ];
}
