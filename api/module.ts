import type { Engine, RunView } from '../engine/index.js';
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import type { ModelServer } from '../serving/model-server.js';
import type { ModelRegistry } from '../serving/registry.js';

/** What the API is built from (by the composition root, app/). */
export interface ApiDeps {
  engine: Engine;
  /** The ledger's database (read by the ledger queries). */
  db: Db;
  models: ModelRegistry;
  modelServer: ModelServer;
  logger: Logger;
}

/** Loads each run at most once per request, however many fields of it are asked for. */
export interface RunLoader {
  load(id: string): Promise<RunView | undefined>;
}

/** What every resolver gets: the dependencies plus per-request state. */
export interface ApiContext extends ApiDeps {
  runs: RunLoader;
}

/**
 * A slice of the GraphQL schema: SDL that extends `Query`/`Mutation`/types, and its resolvers.
 * Optional `routes` answer plain HTTP requests (e.g. POST /models/:name/predict) before GraphQL.
 */
export interface ApiModule {
  name: string;
  typeDefs: string;
  resolvers: Record<string, Record<string, unknown>>;
  routes?: (request: Request, ctx: ApiDeps) => Promise<Response | undefined>;
}
