import { GraphQLScalarType, Kind, type ValueNode } from 'graphql';
import { runPipelineWorkflow } from '../../workflows/index.js';
import { PipelineNameKey, ResumedFromKey, RunStatusKey } from '../../workflows/search-attributes.js';
import type { RunPipelineInput, RunStatus } from '../../workflows/types.js';
import { parseSpecText, resolveSpec, SpecValidationError } from '../../plugins/spec.js';
import { apiError, notFound, specInvalid } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { listRuns, loadRun, newRunId, type RunView } from '../runs.js';

export const coreTypeDefs = /* GraphQL */ `
  "ISO-8601 date-time"
  scalar DateTime
  "Any JSON value"
  scalar JSON

  enum RunStatus { RUNNING COMPLETED FAILED CANCELLED PAUSED TERMINATED TIMED_OUT }
  enum StageStatus { PENDING RUNNING SUCCEEDED FAILED SKIPPED CANCELLED REUSED }

  "A reference to an artifact in the artifact store (the data itself never travels through Temporal)."
  type Artifact { kind: String! uri: String! sha256: String! bytes: Float! meta: JSON }

  type StageRun {
    id: ID!
    plugin: String!
    status: StageStatus!
    "Attempts used so far (Temporal retries included)."
    attempts: Int!
    startedAt: DateTime
    closedAt: DateTime
    outputs: [Artifact!]!
    metrics: JSON!
    error: String
    errorType: String
    "Set when the outputs were reused from an earlier run (resume)."
    reusedFrom: String
    "Last heartbeat of the running attempt (e.g. epoch and metrics)."
    progress: JSON
    "Attempt number of the attempt running now."
    currentAttempt: Int
  }

  type RunEvent { seq: Int! at: DateTime! type: String! stageId: String message: String }

  type PipelineRun {
    "The Temporal workflow id, e.g. pipeline/mnist-default/7f3k2"
    id: ID!
    "The Temporal run id of the current execution."
    runId: String
    pipeline: String!
    status: RunStatus!
    startedAt: DateTime
    closedAt: DateTime
    stages: [StageRun!]!
    "TensorFlow.js backend the ML stages ran on (node-gpu, node, wasm or cpu), once known."
    tfBackend: String
    resumedFrom: String
    pausedStages: [String!]!
    events: [RunEvent!]!
    "Link to the run in the Temporal Web UI, when the UI address is configured."
    temporalUrl: String
  }

  type PageInfo { hasNextPage: Boolean! endCursor: String }
  "cursor: pass pageInfo.endCursor as 'after' for the next page (Temporal visibility pages by token)."
  type PipelineRunEdge { node: PipelineRun! cursor: String! }
  type PipelineRunConnection { edges: [PipelineRunEdge!]! pageInfo: PageInfo! }

  type StagePlugin {
    name: String!
    version: String!
    description: String!
    "JSON Schema of the params"
    paramsSchema: JSON!
    consumes: [String!]!
    produces: [String!]!
    resource: String!
    dataParallel: Boolean!
    source: String!
  }

  input StageSpecInput {
    id: String!
    plugin: String!
    version: String
    params: JSON
    needs: [String!]
    inputs: JSON
    retry: JSON
    timeouts: JSON
    cache: Boolean
  }
  input PipelineSpecInput {
    name: String!
    description: String
    stages: [StageSpecInput!]!
    onFailure: JSON
  }

  type SpecIssue { path: String! message: String! code: String! }
  type SpecValidation { valid: Boolean! issues: [SpecIssue!]! }

  type Query {
    run(id: ID!): PipelineRun
    runs(pipeline: String, status: RunStatus, first: Int = 20, after: String): PipelineRunConnection!
    stagePlugins: [StagePlugin!]!
    "Checks a spec against the plugin registry without starting anything."
    validatePipeline(spec: PipelineSpecInput!): SpecValidation!
  }

  type Mutation {
    startPipeline(spec: PipelineSpecInput!): PipelineRun!
    "Same as startPipeline, with the spec as JSON or YAML text."
    startPipelineFromText(text: String!): PipelineRun!
  }
`;

/** GraphQL input objects carry explicit nulls for omitted optional fields; the spec schema wants them absent. */
export function stripNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripNulls);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, stripNulls(x)]));
  return v;
}

/** Validates, then starts the pipeline workflow. Nothing starts when the spec is invalid. */
export async function startRun(ctx: ApiContext, rawSpec: unknown, extra: { resumedFrom?: string; reuse?: RunPipelineInput['reuse'] } = {}): Promise<RunView> {
  let input;
  try {
    input = resolveSpec(rawSpec, ctx.registry, { taskQueues: taskQueuesOf(ctx) });
  } catch (e) {
    if (e instanceof SpecValidationError) throw specInvalid(e.issues);
    throw e;
  }
  const id = newRunId(input.pipeline);
  const full = { ...input, ...extra };
  const handle = await ctx.temporal.workflow.start(runPipelineWorkflow, {
    taskQueue: ctx.taskQueue,
    workflowId: id,
    args: [full],
    typedSearchAttributes: [
      { key: PipelineNameKey, value: input.pipeline },
      { key: RunStatusKey, value: 'RUNNING' },
      ...(extra.resumedFrom ? [{ key: ResumedFromKey, value: extra.resumedFrom }] : []),
    ],
    staticSummary: `${input.pipeline}: ${input.stages.map((s) => s.id).join(' → ')}`,
    staticDetails: [
      `Pipeline **${input.pipeline}**${extra.resumedFrom ? ` (resumes ${extra.resumedFrom})` : ''}`,
      '',
      '| stage | plugin | queue | replicas |',
      '| --- | --- | --- | --- |',
      ...input.stages.map((s) => `| ${s.id} | \`${s.plugin}@${s.pluginVersion}\` | ${s.taskQueue} | ${s.replicas} |`),
    ].join('\n'),
  });
  return {
    id,
    runId: handle.firstExecutionRunId,
    pipeline: input.pipeline,
    status: 'RUNNING',
    startedAt: new Date().toISOString(),
    stages: input.stages.map((s) => ({
      id: s.id,
      plugin: s.plugin,
      status: extra.reuse?.[s.id] ? 'REUSED' : 'PENDING',
      attempts: 0,
      outputs: extra.reuse?.[s.id]?.outputs ?? {},
      metrics: extra.reuse?.[s.id]?.metrics ?? {},
      ...(extra.reuse?.[s.id] ? { reusedFrom: extra.reuse[s.id]!.fromRun } : {}),
    })),
    pausedStages: [],
    events: [],
    ...(extra.resumedFrom ? { resumedFrom: extra.resumedFrom } : {}),
  };
}

export function taskQueuesOf(ctx: ApiContext): { cpu: string; gpu: string } {
  return (ctx.services.taskQueues as { cpu: string; gpu: string }) ?? { cpu: `${ctx.taskQueue}-cpu`, gpu: `${ctx.taskQueue}-gpu` };
}

export async function requireRun(ctx: ApiContext, id: string): Promise<RunView> {
  const r = await loadRun(ctx, id);
  if (!r) throw notFound(`run ${id}`);
  return r;
}

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
      run: (_: unknown, a: { id: string }, ctx: ApiContext) => loadRun(ctx, a.id),
      runs: async (_: unknown, a: { pipeline?: string; status?: RunStatus; first: number; after?: string }, ctx: ApiContext) => {
        if (a.first < 1 || a.first > 500) throw apiError('BAD_ARGUMENT', 'first must be between 1 and 500');
        const page = await listRuns(ctx, {
          first: a.first,
          ...(a.pipeline != null ? { pipeline: a.pipeline } : {}),
          ...(a.status != null ? { status: a.status } : {}),
          ...(a.after != null ? { after: a.after } : {}),
        });
        return {
          edges: page.items.map((node, i) => ({ node, cursor: i === page.items.length - 1 && page.nextCursor ? page.nextCursor : `${node.id}` })),
          pageInfo: { hasNextPage: page.nextCursor !== undefined, endCursor: page.nextCursor ?? null },
        };
      },
      stagePlugins: (_: unknown, __: unknown, ctx: ApiContext) => ctx.registry.list().map((p) => ({ ...p, paramsSchema: p.paramsJsonSchema })),
      validatePipeline: (_: unknown, a: { spec: unknown }, ctx: ApiContext) => {
        try {
          resolveSpec(stripNulls(a.spec), ctx.registry, { taskQueues: taskQueuesOf(ctx) });
          return { valid: true, issues: [] };
        } catch (e) {
          if (e instanceof SpecValidationError) return { valid: false, issues: e.issues };
          throw e;
        }
      },
    },
    Mutation: {
      startPipeline: (_: unknown, a: { spec: unknown }, ctx: ApiContext) => startRun(ctx, stripNulls(a.spec)),
      startPipelineFromText: (_: unknown, a: { text: string }, ctx: ApiContext) => {
        try {
          return startRun(ctx, parseSpecText(a.text));
        } catch (e) {
          if (e instanceof SpecValidationError) throw specInvalid(e.issues);
          throw e;
        }
      },
    },
    PipelineRun: {
      // Runs listed from visibility carry only summary fields; load the rest on demand.
      stages: async (r: RunView | { id: string }, _: unknown, ctx: ApiContext) => ('stages' in r ? r.stages : ((await loadRun(ctx, r.id))?.stages ?? [])),
      events: async (r: RunView | { id: string }, _: unknown, ctx: ApiContext) => ('events' in r ? r.events : ((await loadRun(ctx, r.id))?.events ?? [])),
      pausedStages: (r: Partial<RunView>) => r.pausedStages ?? [],
      tfBackend: async (r: RunView | { id: string }, _: unknown, ctx: ApiContext) => ('stages' in r ? r.tfBackend : (await loadRun(ctx, r.id))?.tfBackend) ?? null,
      temporalUrl: (r: { id: string; runId?: string }, _: unknown, ctx: ApiContext) => {
        const ui = ctx.services.temporalUiUrl as string | undefined;
        if (!ui) return null;
        const base = `${ui}/namespaces/${encodeURIComponent(ctx.namespace)}/workflows/${encodeURIComponent(r.id)}`;
        return r.runId ? `${base}/${r.runId}/history` : base;
      },
    },
    StageRun: {
      outputs: (s: { outputs: Record<string, unknown> }) => Object.values(s.outputs ?? {}),
    },
  },
};
