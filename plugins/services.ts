import type { LedgerService } from '../ledger/index.js';
import type { ModelRegistry } from '../serving/registry.js';

/**
 * Long-lived services the worker hands to every stage. Built once in the composition root
 * (database opened and migrated there), so a stage never opens or migrates anything itself.
 */
export interface StageServices {
  /** Cost and revenue entries (core:roi-ledger). */
  ledger: LedgerService;
  /** Model versions and aliases (core:deploy). */
  models: ModelRegistry;
}
