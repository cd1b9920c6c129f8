import type { ApiModule } from '../module.js';
import { operationsModule } from './operations.js';

/** The API modules beyond the core (runs, plugins): operations, ledger, models. */
export function apiModules(): ApiModule[] {
  return [operationsModule()];
}
