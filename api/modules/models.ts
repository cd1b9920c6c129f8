// Model registry and live predictions: POST /models/:name/predict, and GraphQL queries/mutations.
import { GraphQLError } from 'graphql';
import { migrate } from '../../lib/db/migrate.js';
import { apiError } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { createModelServer, ServingError, type ModelServer, type ModelServerOptions } from '../../serving/model-server.js';
import { ModelRegistry, PRODUCTION_ALIAS, registryMigrations, RegistryError, type ModelVersion } from '../../serving/registry.js';

export interface ModelsModuleOptions {
  /** How often the server re-reads the `production` alias (default 5 s; 0 = only on demand). */
  refreshIntervalMs?: number;
  /** Hook for the ledger: called after each prediction request with the batch size. */
  onPredictions?: ModelServerOptions['onPredictions'];
  /** Largest batch per request (default 1024). */
  maxBatch?: number;
}

export const modelsTypeDefs = /* GraphQL */ `
  "One class prediction: the arg-max label and the probability of every class."
  type ClassPrediction { label: Int! probabilities: [Float!]! }

  type Prediction {
    model: String!
    "The registry version that answered."
    version: Int!
    predictions: [ClassPrediction!]!
  }

  type ModelVersion {
    model: String!
    version: Int!
    runId: String!
    stageId: String!
    artifactUri: String!
    sha256: String!
    bytes: Float!
    "Measured at deploy time: testAccuracy, p50LatencyMs, p99LatencyMs, sizeBytes, tfBackend, …"
    metrics: JSON!
    testAccuracy: Float
    p99LatencyMs: Float
    createdAt: DateTime!
    "Aliases pointing at this version (e.g. production)."
    aliases: [String!]!
    "Predictions this API process answered with this version."
    predictions: Int!
  }

  type ModelAlias { alias: String! version: Int! updatedAt: DateTime! }

  type ModelAliasChange { alias: String! version: Int! previousVersion: Int reason: String! at: DateTime! }

  type RegisteredModel {
    name: String!
    "Newest first."
    versions: [ModelVersion!]!
    aliases: [ModelAlias!]!
    production: ModelVersion
    "The version this API process is serving now (null until the first prediction loads it)."
    servingVersion: Int
    productionHistory: [ModelAliasChange!]!
  }

  extend type Query {
    models: [RegisteredModel!]!
    model(name: String!): RegisteredModel
    "Predicts with the production version of a model. Each input is one flat sample."
    predict(model: String!, inputs: [[Float!]!]!): Prediction!
  }

  extend type Mutation {
    "Points production at a version (it is loaded and served before this returns)."
    promoteModel(name: String!, version: Int!): RegisteredModel!
    "Points production back at an earlier version (served before this returns)."
    rollbackModel(name: String!, version: Int!): RegisteredModel!
  }
`;

interface ModelsServices {
  modelRegistry: ModelRegistry;
  modelServer: ModelServer;
}

function services(ctx: ApiContext): ModelsServices {
  const s = ctx.services as Partial<ModelsServices>;
  if (!s.modelRegistry || !s.modelServer) throw apiError('MODELS_UNAVAILABLE', 'the models module was not initialised');
  return s as ModelsServices;
}

function toGraphQLError(e: unknown): unknown {
  if (e instanceof ServingError) return apiError(e.code, e.message);
  if (e instanceof RegistryError) return apiError(e.code, e.message);
  return e;
}

async function modelView(ctx: ApiContext, name: string) {
  const { modelRegistry: reg, modelServer: server } = services(ctx);
  const versions = await reg.listVersions(name);
  if (versions.length === 0) return null;
  const aliases = await reg.aliases(name);
  const counts = server.predictionCounts()[name] ?? {};
  const versionView = (v: ModelVersion) => ({
    ...v,
    testAccuracy: typeof v.metrics.testAccuracy === 'number' ? v.metrics.testAccuracy : null,
    p99LatencyMs: typeof v.metrics.p99LatencyMs === 'number' ? v.metrics.p99LatencyMs : null,
    aliases: aliases.filter((a) => a.version === v.version).map((a) => a.alias),
    predictions: counts[v.version] ?? 0,
  });
  const prod = aliases.find((a) => a.alias === PRODUCTION_ALIAS);
  return {
    name,
    versions: versions.map(versionView),
    aliases,
    production: prod ? (versions.map(versionView).find((v) => v.version === prod.version) ?? null) : null,
    servingVersion: server.served().find((s) => s.model === name)?.version ?? null,
    productionHistory: () => reg.aliasHistory(name, PRODUCTION_ALIAS),
  };
}

/** Builds the models API module. Its services (`modelRegistry`, `modelServer`) are created in init. */
export function createModelsModule(opts: ModelsModuleOptions = {}): ApiModule {
  let server: ModelServer | undefined;
  return {
    name: 'models',
    typeDefs: modelsTypeDefs,
    async init(ctx) {
      await migrate(ctx.db, registryMigrations);
      const registry = new ModelRegistry(ctx.db);
      server = createModelServer({
        registry,
        artifacts: ctx.artifacts,
        logger: ctx.logger,
        refreshIntervalMs: opts.refreshIntervalMs ?? 5_000,
        ...(opts.onPredictions ? { onPredictions: opts.onPredictions } : {}),
        ...(opts.maxBatch ? { maxBatch: opts.maxBatch } : {}),
      });
      return { modelRegistry: registry, modelServer: server };
    },
    async close() {
      await server?.close();
    },
    resolvers: {
      Query: {
        models: async (_: unknown, __: unknown, ctx: ApiContext) => {
          const names = await services(ctx).modelRegistry.listModels();
          return (await Promise.all(names.map((n) => modelView(ctx, n)))).filter((m) => m !== null);
        },
        model: (_: unknown, args: { name: string }, ctx: ApiContext) => modelView(ctx, args.name),
        predict: async (_: unknown, args: { model: string; inputs: number[][] }, ctx: ApiContext) => {
          try {
            return await services(ctx).modelServer.predict(args.model, args.inputs);
          } catch (e) {
            throw toGraphQLError(e);
          }
        },
      },
      Mutation: {
        promoteModel: async (_: unknown, args: { name: string; version: number }, ctx: ApiContext) => {
          try {
            await services(ctx).modelServer.promote(args.name, args.version);
          } catch (e) {
            throw toGraphQLError(e);
          }
          return modelView(ctx, args.name);
        },
        rollbackModel: async (_: unknown, args: { name: string; version: number }, ctx: ApiContext) => {
          try {
            await services(ctx).modelServer.rollback(args.name, args.version);
          } catch (e) {
            throw toGraphQLError(e);
          }
          return modelView(ctx, args.name);
        },
      },
    },
    routes: predictRoute,
  };
}

const PREDICT_PATH = /^\/models\/([^/]+)\/predict\/?$/;
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** POST /models/:name/predict  { "inputs": [...] } → { model, version, predictions }. */
async function predictRoute(request: Request, ctx: ApiContext): Promise<Response | undefined> {
  const url = new URL(request.url);
  const m = PREDICT_PATH.exec(url.pathname);
  if (!m) return undefined;
  if (request.method !== 'POST') return json(405, { error: { code: 'METHOD_NOT_ALLOWED', message: `use POST ${url.pathname}` } }, { allow: 'POST' });
  let name: string;
  try {
    name = decodeURIComponent(m[1]!);
  } catch {
    return json(400, { error: { code: 'BAD_INPUT', message: 'model name in the path is not valid URL encoding' } });
  }
  const length = Number(request.headers.get('content-length') ?? 0);
  if (length > MAX_BODY_BYTES) return json(413, { error: { code: 'BODY_TOO_LARGE', message: `request body is ${length} bytes; at most ${MAX_BODY_BYTES}` } });
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    return json(400, { error: { code: 'BAD_INPUT', message: 'request body must be JSON: { "inputs": [[...], ...] }' } });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body) || !('inputs' in body)) {
    return json(400, { error: { code: 'BAD_INPUT', message: 'request body must be an object with an "inputs" list: { "inputs": [[...], ...] }' } });
  }
  try {
    const result = await services(ctx).modelServer.predict(name, (body as { inputs: unknown }).inputs);
    return json(200, result);
  } catch (e) {
    if (e instanceof ServingError) return json(e.status, { error: { code: e.code, message: e.message } });
    if (e instanceof GraphQLError) return json(503, { error: { code: String(e.extensions.code ?? 'UNAVAILABLE'), message: e.message } });
    ctx.logger.error('prediction failed', { model: name, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    return json(500, { error: { code: 'INTERNAL', message: 'prediction failed' } });
  }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}
