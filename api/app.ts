import { createSchema, createYoga, type YogaServerInstance } from 'graphql-yoga';
import type { Engine } from '../engine/index.js';
import { maskApiError } from './errors.js';
import type { ApiContext, ApiDeps, ApiModule, RunLoader } from './module.js';
import { coreModule } from './modules/core.js';
import { ledgerModule } from './modules/ledger.js';
import { modelsModule } from './modules/models.js';
import { operationsModule } from './modules/operations.js';

/** Every module of the API: runs and plugins, operations, the ledger, models. */
export const apiModules: ApiModule[] = [coreModule, operationsModule, ledgerModule, modelsModule];

export interface Api {
  yoga: YogaServerInstance<object, ApiContext>;
  /** Handles a request: module routes first (e.g. POST /models/:name/predict), then GraphQL. */
  fetch(request: Request): Promise<Response>;
  deps: ApiDeps;
}

/** Builds the API (no port): tests call api.fetch(); api/server.ts listens. */
export function createApi(deps: ApiDeps, modules: ApiModule[] = apiModules): Api {
  const yoga = createYoga<object, ApiContext>({
    schema: createSchema<ApiContext>({ typeDefs: modules.map((m) => m.typeDefs), resolvers: modules.map((m) => m.resolvers) as never }),
    context: (): ApiContext => ({ ...deps, runs: runLoader(deps.engine) }),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    maskedErrors: { maskError: maskApiError },
    logging: {
      debug: (...a: unknown[]) => deps.logger.debug(a.map(String).join(' ')),
      info: (...a: unknown[]) => deps.logger.info(a.map(String).join(' ')),
      warn: (...a: unknown[]) => deps.logger.warn(a.map(String).join(' ')),
      error: (...a: unknown[]) => deps.logger.error(a.map((x) => (x instanceof Error ? (x.stack ?? x.message) : String(x))).join(' ')),
    },
  });
  return {
    yoga,
    deps,
    async fetch(request: Request): Promise<Response> {
      for (const m of modules) {
        const res = await m.routes?.(request, deps);
        if (res) return res;
      }
      return yoga.fetch(request, {});
    },
  };
}

function runLoader(engine: Engine): RunLoader {
  const cache = new Map<string, ReturnType<Engine['read']>>();
  return {
    load(id) {
      let p = cache.get(id);
      if (!p) cache.set(id, (p = engine.read(id)));
      return p;
    },
  };
}
