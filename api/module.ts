import type { Client } from '@temporalio/client';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import type { StageRegistry } from '../plugins/registry.js';

/** What every resolver gets. Built once per API process by createApi(deps). */
export interface ApiContext {
  temporal: Client;
  namespace: string;
  taskQueue: string;
  registry: StageRegistry;
  artifacts: ArtifactStore;
  db: Db;
  logger: Logger;
  /** Other long-lived services (model server, ledger, …) registered by API modules. */
  services: Record<string, unknown>;
}

/**
 * A slice of the GraphQL schema: SDL that extends `Query`/`Mutation`/types, and its resolvers.
 * Optional `routes` answer plain HTTP requests (e.g. POST /models/:name/predict) before GraphQL.
 */
export interface ApiModule {
  name: string;
  typeDefs: string;
  resolvers: Record<string, Record<string, unknown>>;
  routes?: (request: Request, ctx: ApiContext) => Promise<Response | undefined>;
  /** Called once at start (e.g. to start a model server); returns services merged into ctx.services. */
  init?: (ctx: ApiContext) => Promise<Record<string, unknown>>;
  close?: () => Promise<void>;
}
