// Model registry and live predictions: POST /models/:name/predict, and GraphQL queries/mutations.
import type { ApiContext, ApiDeps, ApiModule } from '../module.js';
import { ServingError } from '../../serving/model-server.js';
import { PRODUCTION_ALIAS, RegistryError, nameTakenMessage, type ModelOwner, type ModelVersion, type PromotionPolicy } from '../../serving/registry.js';
import { AuthError } from '../auth.js';
import { authorize } from '../authz.js';
import { modelsTypeDefs } from '../schema/models.js';

async function modelView(ctx: ApiDeps, name: string) {
  const { models: reg, modelServer: server } = ctx;
  const versions = await reg.listVersions(name);
  if (versions.length === 0) return null;
  const aliases = await reg.aliases(name);
  const counts = server.predictionCounts()[name] ?? {};
  const versionView = (v: ModelVersion) => ({
    ...v,
    testAccuracy: typeof v.metrics.testAccuracy === 'number' ? v.metrics.testAccuracy : null,
    p99LatencyMs: typeof v.metrics.p99LatencyMs === 'number' ? v.metrics.p99LatencyMs : null,
    format: v.format === 'onnx' ? 'ONNX' : 'TFJS_LAYERS',
    runtime: runtimeOf(v),
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
    servingRuntime: server.served().find((s) => s.model === name)?.runtime ?? null,
    productionHistory: () => reg.aliasHistory(name, PRODUCTION_ALIAS),
    promotionPolicy: async () => policyView(await reg.promotionPolicy(name)),
  };
}

function ownerView(o: ModelOwner | undefined) {
  return o ? { tokenId: o.tokenId, name: o.name, pipeline: o.pipeline || null, runId: o.runId || null, since: o.claimedAt, grantedBy: o.grantedBy } : null;
}

function policyView(p: PromotionPolicy) {
  return { ...p, name: p.model };
}

/**
 * Moving an alias of `name` needs its owning token or an admin (the role check, operate, ran
 * before): an operator may promote and roll back their own models, not anyone else's.
 */
async function requireOwner(ctx: ApiContext, name: string, what: string): Promise<void> {
  const { principal } = ctx;
  if (await ctx.models.mayWrite(name, { admin: principal.role === 'admin', tokenId: principal.tokenId })) return;
  throw new AuthError('FORBIDDEN', `${what}: ${nameTakenMessage(name, await ctx.models.owner(name))}`);
}

/** What measured the version: metrics.runtime, or for versions from before it was recorded, the tfjs backend. */
function runtimeOf(v: ModelVersion): string | null {
  if (typeof v.metrics.runtime === 'string') return v.metrics.runtime;
  return typeof v.metrics.tfBackend === 'string' ? `tfjs (${v.metrics.tfBackend})` : null;
}

const PREDICT_PATH = /^\/models\/([^/]+)\/predict\/?$/;

/** The model registry and live predictions: GraphQL over the registry and model server, and POST /models/:name/predict. */
export const modelsModule: ApiModule = {
  name: 'models',
  typeDefs: modelsTypeDefs,
  resolvers: {
    Query: {
      models: async (_: unknown, __: unknown, ctx: ApiContext) => {
        const names = await ctx.models.listModels();
        return (await Promise.all(names.map((n) => modelView(ctx, n)))).filter((m) => m !== null);
      },
      model: (_: unknown, args: { name: string }, ctx: ApiContext) => modelView(ctx, args.name),
      predict: (_: unknown, args: { model: string; inputs: number[][]; encoding?: 'NORMALIZED' | 'RAW' | null }, ctx: ApiContext) =>
        ctx.modelServer.predict(args.model, args.inputs, { encoding: args.encoding === 'RAW' ? 'raw' : 'normalized' }),
    },
    Mutation: {
      promoteModel: async (_: unknown, args: { name: string; version: number }, ctx: ApiContext) => {
        await requireOwner(ctx, args.name, 'promoteModel');
        await ctx.modelServer.promote(args.name, args.version);
        return modelView(ctx, args.name);
      },
      rollbackModel: async (_: unknown, args: { name: string; version: number }, ctx: ApiContext) => {
        await requireOwner(ctx, args.name, 'rollbackModel');
        await ctx.modelServer.rollback(args.name, args.version);
        return modelView(ctx, args.name);
      },
      setModelOwner: async (_: unknown, args: { name: string; tokenId: string }, ctx: ApiContext) => {
        const token = (await ctx.tokens.list()).find((t) => t.id === args.tokenId);
        if (!token)
          throw new RegistryError(
            'BAD_ARGUMENT',
            `setModelOwner: no token has id ${JSON.stringify(args.tokenId)} (the 12 hex digits after cap_ in the token, or tokens { id })`,
          );
        if (token.revokedAt)
          throw new RegistryError('BAD_ARGUMENT', `setModelOwner: token ${args.tokenId} ("${token.name}") is revoked; grant the model to an active token`);
        return ownerView(await ctx.models.setOwner(args.name, { tokenId: token.id, name: token.name }, ctx.principal.name));
      },
      setModelPromotionPolicy: async (_: unknown, args: { name: string; requireChampionChallenger: boolean; maxTolerance?: number | null }, ctx: ApiContext) =>
        policyView(
          await ctx.models.setPromotionPolicy(
            args.name,
            { requireChampionChallenger: args.requireChampionChallenger, ...(args.maxTolerance != null ? { maxTolerance: args.maxTolerance } : {}) },
            ctx.principal.name,
          ),
        ),
    },
    RegisteredModel: {
      owner: async (m: { name: string }, _: unknown, ctx: ApiContext) => {
        authorize(ctx.principal, 'admin', 'RegisteredModel.owner');
        return ownerView(await ctx.models.owner(m.name));
      },
    },
  },
  routes: [{ path: PREDICT_PATH, permission: 'predict', rateLimit: 'predict', handle: predictRoute }],
};

const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** POST /models/:name/predict  { "inputs": [...], "encoding"?: "normalized" | "raw" } → { model, version, predictions }. */
async function predictRoute(request: Request, ctx: ApiDeps): Promise<Response | undefined> {
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
  const encoding = (body as { encoding?: unknown }).encoding ?? 'normalized';
  if (encoding !== 'normalized' && encoding !== 'raw') {
    return json(400, {
      error: {
        code: 'BAD_INPUT',
        message: '"encoding" must be "normalized" (the default: values as the model takes them) or "raw" (e.g. 0–255 pixels, normalised by the server)',
      },
    });
  }
  try {
    const result = await ctx.modelServer.predict(name, (body as { inputs: unknown }).inputs, { encoding });
    return json(200, result);
  } catch (e) {
    if (e instanceof ServingError) return json(e.status, { error: { code: e.code, message: e.message } });
    ctx.logger.error('prediction failed', { model: name, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    return json(500, { error: { code: 'INTERNAL', message: 'prediction failed' } });
  }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}
