import type { Registry } from 'prom-client';
import type { Principal, TokenStore } from '../auth/tokens.js';
import type { Engine, RunView } from '../engine/index.js';
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import type { ModelServer } from '../serving/model-server.js';
import type { ModelRegistry } from '../serving/registry.js';
import type { AuthMode, RequestMeta } from './auth.js';
import type { Need } from './authz.js';

/** Browser and network rules of the API. */
export interface ApiHttpOptions {
  /**
   * Host header values accepted (`name` or `name:port`, lower case). Loopback names are always
   * accepted, so a DNS-rebinding page (its own host name pointing at 127.0.0.1) is refused.
   */
  allowedHosts: string[];
  /** Origins allowed cross-origin (CORS); none by default. */
  corsOrigins: string[];
  /** Open subscriptions (live run streams) per token. */
  maxSubscriptionsPerToken: number;
  /** A live run stream that has sent nothing for this long is closed (clients reconnect). */
  streamIdleMs: number;
  /** How often an open stream's token is checked again (revoked or expired: the stream ends); default 1 s. */
  tokenRecheckMs?: number;
  /** Predictions per token (POST /models/:name/predict and the predict query): a token bucket; default DEFAULT_PREDICT_RATE. */
  predictRate?: { perMinute: number; burst: number };
  /**
   * Peers whose X-Forwarded-For is believed (addresses or CIDR ranges); none by default. The
   * client address (logs) is the rightmost hop that is not one of them.
   */
  trustedProxies?: string[];
}

/** Predictions per token by default: 100 a second sustained, bursts of 600. */
export const DEFAULT_PREDICT_RATE = { perMinute: 6000, burst: 600 } as const;

/** The rate limits a route or root field may be under (one bucket per kind and token). */
export type RateLimited = 'predict';

/** What the API is built from (by the composition root, app/). */
export interface ApiDeps {
  engine: Engine;
  /** The ledger's database (read by the ledger queries). */
  db: Db;
  models: ModelRegistry;
  modelServer: ModelServer;
  tokens: TokenStore;
  auth: AuthMode;
  http: ApiHttpOptions;
  logger: Logger;
  /** The data roots (CAPSTAN_DATA_ROOTS): errors a non-admin sees name paths inside them as `<data root N>/…`. */
  dataRoots?: readonly string[];
  /** Where GraphQL operations are counted and timed (capstan_graphql_*); none: not measured. */
  graphqlMetrics?: Registry;
}

/** Loads each run at most once per request, however many fields of it are asked for. */
export interface RunLoader {
  load(id: string): Promise<RunView | undefined>;
}

/** What every resolver gets: the dependencies plus per-request state. */
export interface ApiContext extends ApiDeps {
  runs: RunLoader;
  /** Who made the request (authenticated before any resolver runs). */
  principal: Principal;
  /** Aborted when the request ends (client gone, stream closed): long work such as a followed run stops. */
  signal: AbortSignal;
  stop(): void;
  /** Verifies the request's token again (throws UNAUTHENTICATED once it is revoked or expired): long streams call it. */
  reauthenticate(): Promise<void>;
}

/** What a plain HTTP route gets: the request's principal is already checked against its permission. */
export interface RouteContext extends ApiDeps {
  principal: Principal;
  meta: RequestMeta;
}

/** A plain HTTP route answered before GraphQL (e.g. POST /models/:name/predict). */
export interface ApiRoute {
  path: RegExp;
  permission: Need;
  /** The rate limit it is under, checked on the headers before its body is read. */
  rateLimit?: RateLimited;
  handle(request: Request, ctx: RouteContext): Promise<Response | undefined>;
}

/** A slice of the GraphQL schema: SDL that extends `Query`/`Mutation`/types, its resolvers, and plain routes. */
export interface ApiModule {
  name: string;
  typeDefs: string;
  resolvers: Record<string, Record<string, unknown>>;
  routes?: ApiRoute[];
}
