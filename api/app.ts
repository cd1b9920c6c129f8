import { createSchema, createYoga, type YogaServerInstance } from 'graphql-yoga';
import type { ApiContext, ApiModule } from './module.js';
import { coreModule } from './modules/core.js';

export interface Api {
  yoga: YogaServerInstance<object, ApiContext>;
  /** Handles a request: module routes first (e.g. POST /models/:name/predict), then GraphQL. */
  fetch(request: Request): Promise<Response>;
  context: ApiContext;
  close(): Promise<void>;
}

/** Builds the API (no port): tests call api.fetch(); api/server.ts listens. */
export async function createApi(ctx: ApiContext, extraModules: ApiModule[] = []): Promise<Api> {
  const modules = [coreModule, ...extraModules];
  for (const m of modules) if (m.init) Object.assign(ctx.services, await m.init(ctx));
  const resolvers = modules.map((m) => m.resolvers);
  const yoga = createYoga<object, ApiContext>({
    schema: createSchema<ApiContext>({ typeDefs: modules.map((m) => m.typeDefs), resolvers: resolvers as never }),
    context: () => ctx,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    logging: {
      debug: (...a: unknown[]) => ctx.logger.debug(a.map(String).join(' ')),
      info: (...a: unknown[]) => ctx.logger.info(a.map(String).join(' ')),
      warn: (...a: unknown[]) => ctx.logger.warn(a.map(String).join(' ')),
      error: (...a: unknown[]) => ctx.logger.error(a.map((x) => (x instanceof Error ? x.stack ?? x.message : String(x))).join(' ')),
    },
  });
  return {
    yoga,
    context: ctx,
    async fetch(request: Request): Promise<Response> {
      for (const m of modules) {
        if (!m.routes) continue;
        const res = await m.routes(request, ctx);
        if (res) return res;
      }
      return yoga.fetch(request, {});
    },
    async close() {
      for (const m of modules) await m.close?.();
    },
  };
}
