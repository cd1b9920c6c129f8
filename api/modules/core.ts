import { GraphQLScalarType, Kind, type ValueNode } from 'graphql';
import type { RunListItem, RunView } from '../../engine/index.js';
import type { RunStatus } from '../../workflows/types.js';
import { apiError, redactForRole } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { coreTypeDefs } from '../schema/core.js';

/** GraphQL input objects carry explicit nulls for omitted optional fields; the spec schema wants them absent. */
export function stripNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripNulls);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.entries(v)
        .filter(([, x]) => x !== null)
        .map(([k, x]) => [k, stripNulls(x)]),
    );
  return v;
}

/** Who a run started through this request is booked to: the token's name and role. */
export const starterOf = (ctx: ApiContext) => ({ name: ctx.principal.name, role: ctx.principal.role, tokenId: ctx.principal.tokenId });

/** Hidden key on each StageRun object naming its run, for stage fields read by run (history module). */
export const RUN_OF_STAGE = Symbol('runOfStage');

/** A run as listed (visibility fields only) or read in full; the rest is loaded once per request. */
export type RunParent = RunView | RunListItem;
export const full = async (r: RunParent, ctx: ApiContext): Promise<RunView | undefined> => ('stages' in r ? r : ctx.runs.load(r.id));

const jsonScalar = new GraphQLScalarType({
  name: 'JSON',
  serialize: (v) => v,
  parseValue: (v) => v,
  parseLiteral: function lit(ast: ValueNode, vars?: Record<string, unknown> | null): unknown {
    switch (ast.kind) {
      case Kind.STRING:
      case Kind.BOOLEAN:
        return ast.value;
      case Kind.INT:
      case Kind.FLOAT:
        return Number(ast.value);
      case Kind.NULL:
        return null;
      case Kind.LIST:
        return ast.values.map((x) => lit(x, vars));
      case Kind.OBJECT:
        return Object.fromEntries(ast.fields.map((f) => [f.name.value, lit(f.value, vars)]));
      case Kind.VARIABLE:
        return vars?.[ast.name.value];
      default:
        return undefined;
    }
  },
});

const dateTimeScalar = new GraphQLScalarType({
  name: 'DateTime',
  serialize: (v) => (v instanceof Date ? v.toISOString() : v),
  parseValue: (v) => {
    const d = new Date(String(v));
    if (Number.isNaN(d.getTime())) throw apiError('BAD_DATE', `not an ISO-8601 date-time: ${String(v)}`);
    return d;
  },
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING) throw apiError('BAD_DATE', 'DateTime must be a string');
    const d = new Date(ast.value);
    if (Number.isNaN(d.getTime())) throw apiError('BAD_DATE', `not an ISO-8601 date-time: ${ast.value}`);
    return d;
  },
});

export const coreModule: ApiModule = {
  name: 'core',
  typeDefs: coreTypeDefs,
  resolvers: {
    JSON: jsonScalar as unknown as Record<string, unknown>,
    DateTime: dateTimeScalar as unknown as Record<string, unknown>,
    Query: {
      run: (_: unknown, a: { id: string }, ctx: ApiContext) => ctx.runs.load(a.id),
      runs: async (_: unknown, a: { pipeline?: string | null; status?: RunStatus | null; first: number; after?: string | null }, ctx: ApiContext) => {
        const page = await ctx.engine.list({
          first: a.first,
          ...(a.pipeline != null ? { pipeline: a.pipeline } : {}),
          ...(a.status != null ? { status: a.status } : {}),
          ...(a.after != null ? { after: a.after } : {}),
        });
        return {
          edges: page.items.map(({ run, cursor }) => ({ node: run, cursor })),
          pageInfo: {
            hasNextPage: page.hasNextPage,
            hasPreviousPage: page.hasPreviousPage,
            startCursor: page.items[0]?.cursor ?? null,
            endCursor: page.items.at(-1)?.cursor ?? null,
          },
        };
      },
      stagePlugins: (_: unknown, __: unknown, ctx: ApiContext) => ctx.engine.plugins().map((p) => ({ ...p, paramsSchema: p.paramsJsonSchema })),
      validatePipeline: (_: unknown, a: { spec: unknown }, ctx: ApiContext) => {
        const issues = ctx.engine.validate(stripNulls(a.spec));
        return { valid: issues.length === 0, issues };
      },
    },
    Mutation: {
      startPipeline: (_: unknown, a: { spec: unknown }, ctx: ApiContext) => ctx.engine.start(stripNulls(a.spec), { startedBy: starterOf(ctx) }),
      startPipelineFromText: (_: unknown, a: { text: string }, ctx: ApiContext) => ctx.engine.startFromText(a.text, starterOf(ctx)),
    },
    PipelineRun: {
      stages: async (r: RunParent, _: unknown, ctx: ApiContext) => ((await full(r, ctx))?.stages ?? []).map((s) => ({ ...s, [RUN_OF_STAGE]: r.id })),
      events: async (r: RunParent, _: unknown, ctx: ApiContext) => (await full(r, ctx))?.events ?? [],
      pausedStages: async (r: RunParent, _: unknown, ctx: ApiContext) =>
        r.status === 'PAUSED' ? ((await full(r, ctx))?.pausedStages ?? []) : 'pausedStages' in r ? r.pausedStages : [],
      tfBackend: async (r: RunParent, _: unknown, ctx: ApiContext) => (await full(r, ctx))?.tfBackend ?? null,
      resumedFrom: async (r: RunParent, _: unknown, ctx: ApiContext) => (await full(r, ctx))?.resumedFrom ?? null,
      temporalUrl: (r: RunParent, _: unknown, ctx: ApiContext) => ctx.engine.temporalUrl(r.id, r.runId) ?? null,
      traceId: async (r: RunParent, _: unknown, ctx: ApiContext) => (await full(r, ctx))?.traceId ?? null,
      traceUrl: async (r: RunParent, _: unknown, ctx: ApiContext) => ctx.engine.traceUrl((await full(r, ctx))?.traceId) ?? null,
    },
    StageRun: {
      outputs: (s: { outputs: Record<string, unknown> }) => Object.values(s.outputs ?? {}),
      error: (s: { error?: string | null }, _: unknown, ctx: ApiContext) => redactForRole(s.error ?? null, ctx.principal, ctx.dataRoots),
    },
    // A wait carries only the figures of its reason; the lists are empty for the other.
    StageWait: {
      heldBy: (w: { heldBy?: unknown[] }) => w.heldBy ?? [],
      waitingReplicas: (w: { waitingReplicas?: number[] }) => w.waitingReplicas ?? [],
      waitingForReplicas: (w: { waitingForReplicas?: number[] }) => w.waitingForReplicas ?? [],
      notStartedReplicas: (w: { notStartedReplicas?: number[] }) => w.notStartedReplicas ?? [],
    },
    // Texts that carry failure messages: without server paths for non-admins (api/errors.ts).
    RunEvent: {
      message: (e: { message?: string | null }, _: unknown, ctx: ApiContext) => redactForRole(e.message ?? null, ctx.principal, ctx.dataRoots),
    },
    SpecIssue: {
      message: (i: { message: string }, _: unknown, ctx: ApiContext) => redactForRole(i.message, ctx.principal, ctx.dataRoots),
    },
  },
};
