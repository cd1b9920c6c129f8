// The whole GraphQL SDL of the API, in the order the modules stack it: core defines Query,
// Mutation and the shared types; the others `extend` them.
import { authTypeDefs } from './auth.js';
import { coreTypeDefs } from './core.js';
import { historyTypeDefs } from './history.js';
import { ledgerTypeDefs } from './ledger.js';
import { modelsTypeDefs } from './models.js';
import { operationsTypeDefs } from './operations.js';

export { authTypeDefs, coreTypeDefs, historyTypeDefs, ledgerTypeDefs, modelsTypeDefs, operationsTypeDefs };

/** core, operations, ledger, models, auth, history: the typeDefs createApi serves. */
export const apiTypeDefs: string[] = [coreTypeDefs, operationsTypeDefs, ledgerTypeDefs, modelsTypeDefs, authTypeDefs, historyTypeDefs];
