import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { usePrometheus } from '@graphql-yoga/plugin-prometheus';
import type { Registry } from 'prom-client';
import { type ExecutionResult, type GraphQLError, type GraphQLSchema, Kind, type ValidationContext } from 'graphql';
import { createGraphQLError, createSchema, createYoga, isAsyncIterable, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import type { Principal } from '../auth/tokens.js';
import type { Engine } from '../engine/index.js';
import { authenticate, type RequestMeta } from './auth.js';
import { authorize, OPERATION_PERMISSIONS, type Need } from './authz.js';
import { consoleFiles } from './console.js';
import { listCost } from './cost.js';
import { apiError, expectedError, maskApiError, redactErrorsForRole } from './errors.js';
import { graphiqlPage } from './graphiql.js';
import { logOperations } from './log-operations.js';
import { DEFAULT_PREDICT_RATE, type ApiContext, type ApiDeps, type ApiModule, type RateLimited, type RunLoader } from './module.js';
import { authModule } from './modules/auth.js';
import { budgetModule } from './modules/budget.js';
import { coreModule } from './modules/core.js';
import { historyModule } from './modules/history.js';
import { ledgerModule } from './modules/ledger.js';
import { modelsModule } from './modules/models.js';
import { operationsModule } from './modules/operations.js';
import { RateLimiter, rateLimited } from './rate-limit.js';
import { StreamEnded, SubscriptionLimiter } from './subscriptions.js';
import { traceOperations } from './tracing.js';

/** Every module of the API: runs and plugins, operations, the ledger, models, tokens, run history. */
export const apiModules: ApiModule[] = [coreModule, operationsModule, ledgerModule, modelsModule, authModule, historyModule, budgetModule];

/** Limits every GraphQL document is checked against before it runs (GraphQL Armor). */
export const GRAPHQL_LIMITS = { maxDepth: 12, maxAliases: 20, maxTokens: 5000, maxCost: 20000, maxDirectives: 20, maxListCost: 10_000 } as const;

/** A body read before the request is authenticated (a preflight, the console or GraphiQL's page): none of them needs one. */
export const UNAUTHENTICATED_BODY_BYTES = 64 * 1024;

/** GraphQL root fields under a rate limit (the same buckets as the routes that name it). */
const RATE_LIMITED_FIELDS: Partial<Record<'Query' | 'Mutation' | 'Subscription', Record<string, RateLimited>>> = { Query: { predict: 'predict' } };

/** Server context yoga passes to the context factory: set by Api.fetch. */
interface ServerContext {
  principal?: Principal;
  meta?: RequestMeta;
}

/** A request let in on its headers alone: who sent it (none for the pages and preflights that need no token) and how much body may be read. */
export interface Admission {
  principal?: Principal;
  maxBodyBytes: number;
}

export interface Api {
  yoga: YogaServerInstance<ServerContext, ApiContext>;
  /**
   * Decides on the headers alone (the body is not read): the Host check, authentication, the
   * route's permission, its rate limit and the CSRF rule. A refusal is the Response to send.
   */
  admit(request: Request, meta?: RequestMeta): Promise<Response | Admission>;
  /**
   * Handles a request: admit() (unless its admission is passed), then module routes (e.g. POST
   * /models/:name/predict) or GraphQL. `meta` carries the client address when the server knows it.
   */
  fetch(request: Request, meta?: RequestMeta, admission?: Admission): Promise<Response>;
  deps: ApiDeps;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** Builds the API (no port): tests call api.fetch(); api/server.ts listens. */
export function createApi(deps: ApiDeps, modules: ApiModule[] = apiModules): Api {
  const limiter = new SubscriptionLimiter({
    perToken: deps.http.maxSubscriptionsPerToken,
    idleMs: deps.http.streamIdleMs,
    recheckMs: deps.http.tokenRecheckMs ?? 1000,
  });
  const predictRate = deps.http.predictRate ?? DEFAULT_PREDICT_RATE;
  const rates: Record<RateLimited, { limiter: RateLimiter; perMinute: number; what: string }> = {
    predict: { limiter: new RateLimiter(predictRate), perMinute: predictRate.perMinute, what: 'predictions' },
  };
  /** 0 when the principal may go on, else the seconds until it may. */
  const overRate = (kind: RateLimited, p: Principal): number => rates[kind].limiter.take(p.tokenId);
  const schema = createSchema<ApiContext>({
    typeDefs: modules.map((m) => m.typeDefs),
    resolvers: modules.map((m) =>
      guardRootFields(m.resolvers, limiter, (kind, p) => {
        const wait = overRate(kind, p);
        if (wait) throw rateLimited(rates[kind].what, wait, rates[kind].perMinute);
      }),
    ) as never,
  });
  assertEveryRootFieldHasAPermission(schema);
  const cors = deps.http.corsOrigins;
  const yoga = createYoga<ServerContext, ApiContext>({
    schema,
    context: ({ principal, request, meta }): ApiContext => {
      // Api.fetch authenticates every GraphQL request before yoga sees it.
      if (!principal) throw new Error('request reached GraphQL without a principal');
      const ac = new AbortController();
      request.signal?.addEventListener('abort', () => ac.abort(), { once: true });
      return {
        ...deps,
        runs: runLoader(deps.engine),
        principal,
        signal: ac.signal,
        stop: () => ac.abort(),
        reauthenticate: async () => void (await authenticate(request, deps.auth, deps.logger, meta)),
      };
    },
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // Only a listed origin gets CORS headers, and only its own name back: with a list, yoga would
    // otherwise answer other origins "Access-Control-Allow-Origin: null", which sandboxed pages match.
    cors: (request) => {
      const origin = allowedOrigin(request, cors);
      return origin
        ? { origin, credentials: false, methods: ['GET', 'POST'], allowedHeaders: ['authorization', 'content-type', 'x-graphql-yoga-csrf'] }
        : false;
    },
    // GraphiQL is api/graphiql.ts's page (no token in it, a strict CSP), answered before yoga.
    graphiql: false,
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
      listCostLimit(GRAPHQL_LIMITS.maxListCost),
      errorCodesOnResults(),
      redactErrorsForRole(deps.dataRoots),
      logOperations(deps.logger),
      ...(deps.graphqlMetrics ? [graphqlMetrics(deps.graphqlMetrics)] : []),
      // A span per query and mutation when tracing is on (nothing otherwise).
      traceOperations(),
    ],
    maskedErrors: { maskError: maskApiError },
    logging: {
      debug: (...a: unknown[]) => deps.logger.debug(a.map(String).join(' ')),
      info: (...a: unknown[]) => deps.logger.info(a.map(String).join(' ')),
      warn: (...a: unknown[]) => deps.logger.warn(a.map(String).join(' ')),
      error: (...a: unknown[]) => {
        // yoga logs every error its mask rewrote; expected ones (a code for the client) are not the API's failures.
        if (a.length === 1 && isExpected(a[0])) return deps.logger.debug(`refused: ${(a[0] as Error).message}`);
        deps.logger.error(a.map((x) => (x instanceof Error ? (x.stack ?? x.message) : String(x))).join(' '));
      },
    },
  });
  const routes = modules.flatMap((m) => m.routes ?? []);
  const consolePage = consoleFiles();
  const graphiql = graphiqlPage();
  /** What needs no token: the health check, the console's and GraphiQL's pages, CORS preflights (yoga answers them, module routes included). */
  const open = (request: Request, url: URL) =>
    url.pathname === '/healthz' || consolePage.owns(url.pathname) || graphiql.owns(request) || request.method === 'OPTIONS';
  const api: Api = {
    yoga,
    deps,
    async admit(request: Request, meta: RequestMeta = {}): Promise<Response | Admission> {
      const url = new URL(request.url);
      if (!hostAllowed(request.headers.get('host') ?? url.host, deps.http.allowedHosts)) {
        deps.logger.warn('request refused: Host not allowed', {
          host: request.headers.get('host') ?? url.host,
          path: url.pathname,
          ...(meta.remoteAddress ? { remote: meta.remoteAddress } : {}),
        });
        return jsonError(421, 'HOST_NOT_ALLOWED', 'the Host header names a host this API does not serve (see CAPSTAN_ALLOWED_HOSTS)');
      }
      if (open(request, url)) return { maxBodyBytes: UNAUTHENTICATED_BODY_BYTES };
      const route = routes.find((r) => r.path.test(url.pathname));
      // Answers made here rather than by yoga get the same CORS headers, so an allowed origin can read its errors.
      const origin = allowedOrigin(request, cors);
      const answer = (r: Response) => (origin ? withCors(r, origin) : r);
      let principal: Principal;
      try {
        principal = await authenticate(request, deps.auth, deps.logger, meta);
        if (route) authorize(principal, route.permission, `${request.method} ${url.pathname}`);
      } catch (e) {
        const x = expectedError(e) ?? { code: 'UNAUTHENTICATED', message: 'not authenticated', extensions: {} };
        const status = x.code === 'FORBIDDEN' ? 403 : 401;
        return answer(jsonError(status, x.code, x.message, status === 401 ? { 'www-authenticate': 'Bearer' } : {}, route !== undefined));
      }
      // What a browser sends cross-site without a preflight must carry a header such a page cannot set
      // (matters with CAPSTAN_AUTH=off, where no Authorization header is needed; yoga's CSRF plugin would refuse GraphQL without a code).
      // (A module route acts only on POST; any other method gets its 405.)
      if ((!route || request.method === 'POST') && !preflighted(request)) {
        return answer(
          jsonError(
            403,
            'CSRF_HEADER_MISSING',
            'a request with no Content-Type or a form/text Content-Type (what any web page can send) needs an "x-graphql-yoga-csrf" or Authorization header; send Content-Type: application/json',
            {},
            route !== undefined,
          ),
        );
      }
      if (route?.rateLimit && request.method === 'POST') {
        const wait = overRate(route.rateLimit, principal);
        if (wait) {
          const e = rateLimited(rates[route.rateLimit].what, wait, rates[route.rateLimit].perMinute);
          deps.logger.warn('request refused: rate limit', {
            path: url.pathname,
            tokenId: principal.tokenId,
            ...(meta.remoteAddress ? { remote: meta.remoteAddress } : {}),
          });
          return answer(jsonError(429, 'RATE_LIMITED', e.message, { 'retry-after': String(wait) }, true));
        }
      }
      return { principal, maxBodyBytes: Number.POSITIVE_INFINITY };
    },
    async fetch(request: Request, meta: RequestMeta = {}, admission?: Admission): Promise<Response> {
      const admitted = admission ?? (await api.admit(request, meta));
      if (admitted instanceof Response) return admitted;
      const url = new URL(request.url);
      if (url.pathname === '/healthz') return new Response('ok\n', { headers: { 'content-type': 'text/plain' } });
      // The console and GraphiQL (static pages that sign in with a token and read GraphQL like any client): no auth, no data.
      if (consolePage.owns(url.pathname)) return consolePage.serve(request);
      if (graphiql.owns(request)) return graphiql.serve(request);
      if (request.method === 'OPTIONS') return explained(request, await yoga.fetch(request, { meta }));
      const principal = admitted.principal;
      if (!principal) throw new Error(`${request.method} ${url.pathname} reached dispatch without a principal`);
      const route = routes.find((r) => r.path.test(url.pathname));
      const origin = allowedOrigin(request, cors);
      const answer = (r: Response) => (origin ? withCors(r, origin) : r);
      if (route)
        return answer(
          (await route.handle(request, { ...deps, principal, meta })) ??
            jsonError(404, 'NOT_FOUND', `no route for ${request.method} ${url.pathname}`, {}, true),
        );
      return explained(request, await yoga.fetch(request, { principal, meta }));
    },
  };
  return api;
}

/**
 * GraphQL operations counted and timed on the API's registry (yoga's Prometheus plugin), under
 * Capstan's names; served by the API's /metrics, never by yoga itself. No per-URL or per-resolver
 * series: they would grow without bound.
 */
function graphqlMetrics(registry: Registry): Plugin {
  return usePrometheus({
    registry,
    endpoint: false,
    // An error's path names list indices (runs.edges.3.node): a series per index would grow without bound.
    labels: { path: false },
    metrics: {
      graphql_envelop_request: 'capstan_graphql_requests_total',
      graphql_envelop_request_duration: 'capstan_graphql_request_duration_seconds',
      graphql_envelop_error_result: 'capstan_graphql_errors_total',
      graphql_envelop_request_time_summary: false,
      graphql_envelop_deprecated_field: false,
      graphql_envelop_phase_parse: false,
      graphql_envelop_phase_validate: false,
      graphql_envelop_phase_context: false,
      graphql_envelop_phase_execute: false,
      graphql_envelop_phase_subscribe: false,
      graphql_envelop_schema_change: false,
      graphql_envelop_execute_resolver: false,
      graphql_yoga_http_duration: false,
    },
  }) as Plugin;
}

/**
 * Refuses an operation whose cost, list sizes multiplied in (api/cost.ts), is over `max`: code
 * QUERY_LIMIT_EXCEEDED, before any resolver runs. Checked at execution, where variables are known.
 */
function listCostLimit(max: number): Plugin {
  const check = (args: {
    schema: GraphQLSchema;
    document: import('graphql').DocumentNode;
    variableValues?: Record<string, unknown> | null | undefined;
    operationName?: string | null | undefined;
  }) => {
    const cost = listCost(args.schema, args.document, args.variableValues ?? {}, args.operationName);
    return cost > max
      ? apiError(
          'QUERY_LIMIT_EXCEEDED',
          `query cost ${cost} is over the limit of ${max}: list fields count once per item they may return (first/last/limit, or their default); ask for smaller pages or fewer fields`,
        )
      : undefined;
  };
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const e = check(args);
      if (e) setResultAndStopExecution({ errors: [e] });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const e = check(args);
      if (e) setResultAndStopExecution({ errors: [e] });
    },
  };
}

/** How an Armor limit refuses a document: a validation error with code QUERY_LIMIT_EXCEEDED. */
const reportLimit = {
  propagateOnRejection: false,
  onReject: [
    (ctx: ValidationContext | null, err: GraphQLError) =>
      ctx?.reportError(createGraphQLError(err.message.replace(/^Syntax Error: /, ''), { extensions: { code: 'QUERY_LIMIT_EXCEEDED' } })),
  ],
};

/** Validation errors get a code too: the Armor limits give theirs (QUERY_LIMIT_EXCEEDED), graphql-js's get GRAPHQL_VALIDATION_FAILED. */
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
                  // The Armor limits report with their own code (reportLimit above): whatever has none is graphql-js's.
                  extensions: { ...e.extensions, code: 'GRAPHQL_VALIDATION_FAILED' },
                }),
          ),
        );
      };
    },
  };
}

/**
 * Errors graphql-js makes outside validation have no code either (e.g. a variable of the wrong
 * type, found when execution starts): BAD_ARGUMENT for an error about a variable (it points at the
 * variable's definition), BAD_REQUEST otherwise.
 */
function errorCodesOnResults(): Plugin {
  const withCode = (e: GraphQLError): GraphQLError =>
    e.extensions?.code
      ? e
      : createGraphQLError(e.message, {
          ...(e.nodes ? { nodes: e.nodes } : {}),
          ...(e.path ? { path: e.path } : {}),
          extensions: { ...e.extensions, code: e.nodes?.some((n) => n.kind === Kind.VARIABLE_DEFINITION) ? 'BAD_ARGUMENT' : 'BAD_REQUEST' },
        });
  const fix = (r: ExecutionResult): ExecutionResult => (r.errors?.some((e) => !e.extensions?.code) ? { ...r, errors: r.errors.map(withCode) } : r);
  return {
    onResultProcess({ result, setResult }) {
      if (Array.isArray(result)) setResult(result.map(fix));
      else if (!isAsyncIterable(result)) setResult(fix(result as ExecutionResult));
    },
  };
}

/** yoga's bodiless refusals (unknown path, method or content type) as errors with a code and a message. */
function explained(request: Request, response: Response): Response {
  if (response.status < 400 || response.headers.get('content-type')) return response;
  const { pathname } = new URL(request.url);
  const [code, message] =
    response.status === 404
      ? ['NOT_FOUND', `nothing is served at ${pathname}: the API serves POST /graphql (GraphiQL at GET /graphql), POST /models/:name/predict and GET /healthz`]
      : response.status === 405
        ? [
            'METHOD_NOT_ALLOWED',
            `${request.method} is not allowed on ${pathname}${response.headers.get('allow') ? `; use ${response.headers.get('allow')}` : ''}`,
          ]
        : response.status === 415
          ? ['UNSUPPORTED_MEDIA_TYPE', 'send the request as Content-Type: application/json']
          : ['BAD_REQUEST', `not a request this API understands (HTTP ${response.status}); send POST /graphql with Content-Type: application/json`];
  const headers: Record<string, string> = {};
  response.headers.forEach((v, k) => {
    if (k !== 'content-length') headers[k] = v;
  });
  return jsonError(response.status, code, message, headers, pathname !== '/graphql');
}

/**
 * Wraps every Query/Mutation/Subscription resolver with its permission check and rate limit (and
 * subscriptions with the limiter, which also ends a stream whose token is revoked or expires).
 */
function guardRootFields(
  resolvers: ApiModule['resolvers'],
  limiter: SubscriptionLimiter,
  limitRate: (kind: RateLimited, p: Principal) => void,
): ApiModule['resolvers'] {
  const out: ApiModule['resolvers'] = { ...resolvers };
  for (const type of ['Query', 'Mutation', 'Subscription'] as const) {
    const fields = resolvers[type];
    if (!fields) continue;
    out[type] = Object.fromEntries(
      Object.entries(fields).map(([name, r]) => {
        const need = permissionOf(type, name);
        const rate = RATE_LIMITED_FIELDS[type]?.[name];
        const what = `${type === 'Query' ? 'query' : type === 'Mutation' ? 'mutation' : 'subscription'} ${name}`;
        if (type === 'Subscription') {
          const sub = r as { subscribe: (...a: unknown[]) => Promise<AsyncIterable<unknown>>; resolve?: (e: unknown, ...rest: unknown[]) => unknown };
          return [
            name,
            {
              ...sub,
              // The limiter ends a stream whose token stopped being valid with an UNAUTHENTICATED event.
              resolve: (e: unknown, ...rest: unknown[]) => {
                if (e instanceof StreamEnded) throw e.error;
                return sub.resolve ? sub.resolve(e, ...rest) : e;
              },
              subscribe: async (p: unknown, a: unknown, ctx: ApiContext, i: unknown) => {
                authorize(ctx.principal, need, what);
                if (rate) limitRate(rate, ctx.principal);
                const slot = limiter.acquire(ctx.principal);
                const release = () => {
                  slot();
                  ctx.stop();
                };
                try {
                  return limiter.wrap(await sub.subscribe(p, a, ctx, i), release, ctx.reauthenticate);
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
            if (rate) limitRate(rate, ctx.principal);
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

/** The request's Origin when it is one of the CORS origins; undefined otherwise. */
function allowedOrigin(request: Request, origins: string[]): string | undefined {
  const origin = request.headers.get('origin');
  return origin !== null && origins.includes(origin) ? origin : undefined;
}

function withCors(response: Response, origin: string): Response {
  response.headers.set('access-control-allow-origin', origin);
  response.headers.append('vary', 'Origin');
  return response;
}

/** Content types a page on any site may send without a CORS preflight (HTML forms, simple fetches). */
const SIMPLE_CONTENT_TYPES = ['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain'];

/** Whether a browser would have preflighted this request (or it carries a header only a preflighted request can): the CSRF rule of useCSRFPrevention. */
function preflighted(request: Request): boolean {
  if (request.headers.has('authorization') || request.headers.has('x-graphql-yoga-csrf')) return true;
  const type = request.headers.get('content-type')?.toLowerCase();
  return !!type && !SIMPLE_CONTENT_TYPES.some((t) => type.startsWith(t));
}

function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}, plain = false): Response {
  // Plain routes answer { error: { code, message } }; GraphQL clients get the GraphQL error shape.
  const body = plain ? { error: { code, message } } : { errors: [{ message, extensions: { code } }] };
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

function isExpected(e: unknown): boolean {
  const original = e && typeof e === 'object' && 'originalError' in e ? (e as { originalError?: unknown }).originalError : e;
  return expectedError(original) !== undefined;
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
