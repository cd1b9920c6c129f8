import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import type { GraphQLError, GraphQLSchema, ValidationContext } from 'graphql';
import { createGraphQLError, createSchema, createYoga, shouldRenderGraphiQL, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import type { Principal } from '../auth/tokens.js';
import type { Engine } from '../engine/index.js';
import { authenticate, type RequestMeta } from './auth.js';
import { authorize, OPERATION_PERMISSIONS, type Need } from './authz.js';
import { expectedError, maskApiError } from './errors.js';
import type { ApiContext, ApiDeps, ApiModule, RunLoader } from './module.js';
import { authModule } from './modules/auth.js';
import { coreModule } from './modules/core.js';
import { ledgerModule } from './modules/ledger.js';
import { modelsModule } from './modules/models.js';
import { operationsModule } from './modules/operations.js';
import { SubscriptionLimiter } from './subscriptions.js';

/** Every module of the API: runs and plugins, operations, the ledger, models, tokens. */
export const apiModules: ApiModule[] = [coreModule, operationsModule, ledgerModule, modelsModule, authModule];

/** Limits every GraphQL document is checked against before it runs (GraphQL Armor). */
export const GRAPHQL_LIMITS = { maxDepth: 12, maxAliases: 20, maxTokens: 5000, maxCost: 20000, maxDirectives: 20 } as const;

/** Server context yoga passes to the context factory: set by Api.fetch. */
interface ServerContext {
  principal?: Principal;
  meta?: RequestMeta;
}

export interface Api {
  yoga: YogaServerInstance<ServerContext, ApiContext>;
  /**
   * Handles a request: the Host check, authentication, then module routes (e.g. POST
   * /models/:name/predict) or GraphQL. `meta` carries the peer address when the server knows it.
   */
  fetch(request: Request, meta?: RequestMeta): Promise<Response>;
  deps: ApiDeps;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** Builds the API (no port): tests call api.fetch(); api/server.ts listens. */
export function createApi(deps: ApiDeps, modules: ApiModule[] = apiModules): Api {
  const limiter = new SubscriptionLimiter({ perToken: deps.http.maxSubscriptionsPerToken, idleMs: deps.http.streamIdleMs });
  const schema = createSchema<ApiContext>({
    typeDefs: modules.map((m) => m.typeDefs),
    resolvers: modules.map((m) => guardRootFields(m.resolvers, limiter)) as never,
  });
  assertEveryRootFieldHasAPermission(schema);
  const cors = deps.http.corsOrigins;
  const yoga = createYoga<ServerContext, ApiContext>({
    schema,
    context: ({ principal, request }): ApiContext => {
      // Api.fetch authenticates every GraphQL request before yoga sees it.
      if (!principal) throw new Error('request reached GraphQL without a principal');
      const ac = new AbortController();
      request.signal?.addEventListener('abort', () => ac.abort(), { once: true });
      return { ...deps, runs: runLoader(deps.engine), principal, signal: ac.signal, stop: () => ac.abort() };
    },
    graphqlEndpoint: '/graphql',
    landingPage: false,
    cors: cors.length ? { origin: cors, credentials: false, methods: ['GET', 'POST'], allowedHeaders: ['authorization', 'content-type', 'x-graphql-yoga-csrf'] } : false,
    graphiql: (_request, ctx) => {
      const token = deps.http.graphiqlToken;
      const remote = ctx?.meta?.remoteAddress;
      const local = remote !== undefined && isLoopbackAddress(remote);
      return { title: 'Capstan', ...(token && local ? { headers: JSON.stringify({ Authorization: `Bearer ${token}` }) } : {}) };
    },
    plugins: [
      // A request browsers send without a preflight (GET, form posts) must carry a header they cannot set cross-origin.
      useCSRFPrevention({ requestHeaders: ['x-graphql-yoga-csrf', 'authorization'] }),
      EnvelopArmorPlugin({
        // Reported as validation errors with a code (not thrown bare), like every other error.
        maxDepth: { n: GRAPHQL_LIMITS.maxDepth, ignoreIntrospection: true, ...reportLimit },
        maxAliases: { n: GRAPHQL_LIMITS.maxAliases, ...reportLimit },
        maxTokens: { n: GRAPHQL_LIMITS.maxTokens },
        costLimit: { maxCost: GRAPHQL_LIMITS.maxCost, ignoreIntrospection: true, ...reportLimit },
        maxDirectives: { n: GRAPHQL_LIMITS.maxDirectives, ...reportLimit },
        blockFieldSuggestion: { enabled: true },
      }),
      errorCodesOnValidation(),
    ],
    maskedErrors: { maskError: maskApiError },
    logging: {
      debug: (...a: unknown[]) => deps.logger.debug(a.map(String).join(' ')),
      info: (...a: unknown[]) => deps.logger.info(a.map(String).join(' ')),
      warn: (...a: unknown[]) => deps.logger.warn(a.map(String).join(' ')),
      error: (...a: unknown[]) => deps.logger.error(a.map((x) => (x instanceof Error ? (x.stack ?? x.message) : String(x))).join(' ')),
    },
  });
  const routes = modules.flatMap((m) => m.routes ?? []);
  return {
    yoga,
    deps,
    async fetch(request: Request, meta: RequestMeta = {}): Promise<Response> {
      const url = new URL(request.url);
      if (!hostAllowed(request.headers.get('host') ?? url.host, deps.http.allowedHosts)) {
        deps.logger.warn('request refused: Host not allowed', { host: request.headers.get('host') ?? url.host, path: url.pathname });
        return jsonError(421, 'HOST_NOT_ALLOWED', 'the Host header names a host this API does not serve (see CAPSTAN_ALLOWED_HOSTS)');
      }
      if (url.pathname === '/healthz') return new Response('ok\n', { headers: { 'content-type': 'text/plain' } });
      const route = routes.find((r) => r.path.test(url.pathname));
      // GraphiQL's page and CORS preflights carry no credentials; everything else does.
      const open = !route && (request.method === 'OPTIONS' || shouldRenderGraphiQL(request));
      if (open) return yoga.fetch(request, { meta });
      let principal: Principal;
      try {
        principal = await authenticate(request, deps.auth, deps.logger, meta);
        if (route) authorize(principal, route.permission, `${request.method} ${url.pathname}`);
      } catch (e) {
        const x = expectedError(e) ?? { code: 'UNAUTHENTICATED', message: 'not authenticated', extensions: {} };
        const status = x.code === 'FORBIDDEN' ? 403 : 401;
        return jsonError(status, x.code, x.message, status === 401 ? { 'www-authenticate': 'Bearer' } : {}, route !== undefined);
      }
      if (route) return (await route.handle(request, { ...deps, principal, meta })) ?? jsonError(404, 'NOT_FOUND', `no route for ${request.method} ${url.pathname}`);
      return yoga.fetch(request, { principal, meta });
    },
  };
}

/** How an Armor limit refuses a document: a validation error with code QUERY_LIMIT_EXCEEDED. */
const reportLimit = {
  propagateOnRejection: false,
  onReject: [(ctx: ValidationContext | null, err: GraphQLError) => ctx?.reportError(createGraphQLError(err.message.replace(/^Syntax Error: /, ''), { extensions: { code: 'QUERY_LIMIT_EXCEEDED' } }))],
};

/** Validation errors get a code too: QUERY_LIMIT_EXCEEDED for the Armor limits, GRAPHQL_VALIDATION_FAILED otherwise. */
function errorCodesOnValidation(): Plugin {
  return {
    onValidate() {
      return ({ result, setResult }) => {
        if (!result.length || result.every((e) => e.extensions?.code)) return;
        setResult(
          result.map((e) =>
            e.extensions?.code
              ? e
              : createGraphQLError(e.message, {
                  ...(e.nodes ? { nodes: e.nodes } : {}),
                  extensions: { ...e.extensions, code: /limit of \d+ exceeded/i.test(e.message) ? 'QUERY_LIMIT_EXCEEDED' : 'GRAPHQL_VALIDATION_FAILED' },
                }),
          ),
        );
      };
    },
  };
}

/** Wraps every Query/Mutation/Subscription resolver with its permission check (and subscriptions with the limiter). */
function guardRootFields(resolvers: ApiModule['resolvers'], limiter: SubscriptionLimiter): ApiModule['resolvers'] {
  const out: ApiModule['resolvers'] = { ...resolvers };
  for (const type of ['Query', 'Mutation', 'Subscription'] as const) {
    const fields = resolvers[type];
    if (!fields) continue;
    out[type] = Object.fromEntries(
      Object.entries(fields).map(([name, r]) => {
        const need = permissionOf(type, name);
        const what = `${type === 'Query' ? 'query' : type === 'Mutation' ? 'mutation' : 'subscription'} ${name}`;
        if (type === 'Subscription') {
          const sub = r as { subscribe: (...a: unknown[]) => Promise<AsyncIterable<unknown>>; resolve?: unknown };
          return [
            name,
            {
              ...sub,
              subscribe: async (p: unknown, a: unknown, ctx: ApiContext, i: unknown) => {
                authorize(ctx.principal, need, what);
                const slot = limiter.acquire(ctx.principal);
                const release = () => {
                  slot();
                  ctx.stop();
                };
                try {
                  return limiter.wrap(await sub.subscribe(p, a, ctx, i), release);
                } catch (e) {
                  release();
                  throw e;
                }
              },
            },
          ];
        }
        const fn = r as (p: unknown, a: unknown, ctx: ApiContext, i: unknown) => unknown;
        return [
          name,
          (p: unknown, a: unknown, ctx: ApiContext, i: unknown) => {
            authorize(ctx.principal, need, what);
            return fn(p, a, ctx, i);
          },
        ];
      }),
    );
  }
  return out;
}

function permissionOf(type: 'Query' | 'Mutation' | 'Subscription', field: string): Need {
  const need = OPERATION_PERMISSIONS[type][field];
  if (!need) throw new Error(`${type}.${field} has no entry in OPERATION_PERMISSIONS (api/authz.ts): every operation needs one`);
  return need;
}

function assertEveryRootFieldHasAPermission(schema: GraphQLSchema): void {
  for (const [type, t] of [
    ['Query', schema.getQueryType()],
    ['Mutation', schema.getMutationType()],
    ['Subscription', schema.getSubscriptionType()],
  ] as const) {
    for (const field of Object.keys(t?.getFields() ?? {})) permissionOf(type, field);
  }
}

function hostAllowed(host: string, allowed: string[]): boolean {
  const h = host.toLowerCase();
  const name = h.startsWith('[') ? h.slice(0, h.indexOf(']') + 1) : h.split(':')[0]!;
  return LOOPBACK_HOSTS.has(name) || allowed.includes(h) || allowed.includes(name);
}

export function isLoopbackAddress(a: string): boolean {
  return a === '::1' || a.startsWith('127.') || a.startsWith('::ffff:127.');
}

function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}, plain = false): Response {
  // Plain routes answer { error: { code, message } }; GraphQL clients get the GraphQL error shape.
  const body = plain ? { error: { code, message } } : { errors: [{ message, extensions: { code } }] };
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
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
