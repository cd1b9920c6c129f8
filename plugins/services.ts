import type { LedgerService } from '../ledger/index.js';
import type { ModelRegistry } from '../serving/registry.js';

export type { StageServices } from './contract.js';

// The host's own services, added to the contract's `StageServices` (which names what any plugin
// may use, e.g. `python`). Declared here and not in the contract so the SDK's type declarations
// do not carry the ledger's and the model registry's types (and their database layer).
// Built once in the composition root (database opened and migrated there), so a stage never opens
// or migrates anything itself.
declare module './contract.js' {
  interface StageServices {
    /** Cost and revenue entries (core:roi-ledger). */
    ledger: LedgerService;
    /** Model versions and aliases (core:deploy). */
    models: ModelRegistry;
  }
}
