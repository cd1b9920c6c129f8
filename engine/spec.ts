import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { formatDuration, parseDurationMs } from '../lib/duration.js';
import type { ResolvedStage, RetrySpec, RunPipelineInput } from '../workflows/types.js';
import type { StageRegistry } from '../plugins/registry.js';
import { formatPath } from '../lib/format-path.js';
import { mergePriceSheet } from '../ledger/price-sheet.js';
import { moneySchema, type PriceSheet } from '../ledger/schemas.js';
import type { BudgetInput } from '../workflows/types.js';
import { EngineError } from './errors.js';

/** What a spec may ask for. Each limit is checked by validation, so a run never starts that Temporal would reject or that would not fit. */
export const SPEC_LIMITS = {
  stages: 100,
  /** Stages that may run at the same time (the widest set of stages none of which depends on another). */
  parallelStages: 16,
  paramsBytes: 64 * 1024,
  specBytes: 512 * 1024,
  descriptionChars: 2000,
  nonRetryableErrorTypes: 50,
  startToCloseMs: { min: 1000, max: 7 * 24 * 3_600_000 },
  heartbeatMs: { min: 1000, max: 24 * 3_600_000 },
  retryIntervalMs: { min: 1, max: 24 * 3_600_000 },
  pauseTimeoutMs: { min: 1000, max: 30 * 24 * 3_600_000 },
  watchWindowMs: { min: 1000, max: 366 * 24 * 3_600_000 },
} as const;

/**
 * The per-stage params limit, for the paths that take params outside a spec (retryStage's
 * corrected params, an event's payload that fills params in): BAD_ARGUMENT past it.
 */
export function checkParamsSize(value: unknown, what: string): void {
  let size: number;
  try {
    size = JSON.stringify(value ?? null).length;
  } catch {
    throw new EngineError('BAD_ARGUMENT', `${what} must be plain JSON`);
  }
  if (size > SPEC_LIMITS.paramsBytes) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `${what} must be at most ${SPEC_LIMITS.paramsBytes / 1024} KiB of JSON, like a stage's params in a spec (pass big data as files); got ${size} bytes`,
      { limit: SPEC_LIMITS.paramsBytes, size },
    );
  }
}

/** A duration ("30s", "5m", "1h" or milliseconds) within bounds: 0 or a week-long heartbeat would leave a run stuck. */
const duration = (b: { min: number; max: number }) =>
  z.union([z.number().int().nonnegative(), z.string().max(32)]).superRefine((v, ctx) => {
    const ms = parseDurationMs(v);
    if (ms === undefined) ctx.addIssue({ code: 'custom', message: 'must be a duration like "30s", "5m", "1h" or a number of milliseconds' });
    else if (ms < b.min || ms > b.max)
      ctx.addIssue({ code: 'custom', message: `must be between ${formatDuration(b.min)} and ${formatDuration(b.max)}; got ${formatDuration(ms)}` });
  });

export const stageRetrySpecSchema = z
  .object({
    maximumAttempts: z.number().int().min(1).max(100).optional(),
    initialInterval: duration(SPEC_LIMITS.retryIntervalMs).optional(),
    backoffCoefficient: z.number().min(1).max(10).optional(),
    maximumInterval: duration(SPEC_LIMITS.retryIntervalMs).optional(),
    nonRetryableErrorTypes: z
      .array(z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, 'must be an error type like MY_ERROR'))
      .max(SPEC_LIMITS.nonRetryableErrorTypes)
      .optional(),
  })
  .strict();

export const stageSpecSchema = z
  .object({
    id: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be lower-case letters, digits, "-" or "_", starting with a letter'),
    plugin: z.string().min(1).max(100),
    /** Pin an exact plugin version; the newest registered one otherwise. */
    version: z.string().max(64).optional(),
    params: z
      .record(z.string(), z.unknown())
      .default({})
      .refine((p) => JSON.stringify(p).length <= SPEC_LIMITS.paramsBytes, {
        message: `params must be at most ${SPEC_LIMITS.paramsBytes / 1024} KiB of JSON (pass big data as files, not params)`,
      }),
    /** Stage ids this stage waits for; the previous stage when omitted, [] to start at once. */
    needs: z.array(z.string().max(63)).max(SPEC_LIMITS.stages).optional(),
    /** Pick which stage provides a consumed artifact kind, when several could. */
    inputs: z.record(z.string().max(63), z.string().max(63)).optional(),
    retry: stageRetrySpecSchema.optional(),
    timeouts: z
      .object({ startToClose: duration(SPEC_LIMITS.startToCloseMs).optional(), heartbeat: duration(SPEC_LIMITS.heartbeatMs).optional() })
      .strict()
      .optional(),
    /** Reuse the outputs of an earlier successful run with the same plugin version, params and inputs. */
    cache: z.boolean().optional(),
    /** This stage's own spending limit (in the run budget's currency). */
    budget: z
      .object({ max: moneySchema, onExceed: z.enum(['pause', 'fail']).optional() })
      .strict()
      .optional(),
  })
  .strict();

/** A realised-ROI threshold as a decimal ratio ("0.25" = 25 %, "-0.5"), at most 4 places. */
const roiRatio = z.union([z.string().max(32), z.number()]).transform((v, ctx) => {
  const t = String(v).trim();
  if (!/^-?\d+(\.\d{1,4})?$/.test(t)) {
    ctx.addIssue({ code: 'custom', message: `must be a decimal ratio with at most 4 places, e.g. "0.25" for 25 % (got ${JSON.stringify(v)})` });
    return z.NEVER;
  }
  return t;
});

export const pipelineSpecSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/i, 'must be letters, digits, ".", "-" or "_" (up to 63)'),
    description: z.string().max(SPEC_LIMITS.descriptionChars).optional(),
    stages: z
      .array(stageSpecSchema)
      .min(1, 'a pipeline needs at least one stage')
      .max(SPEC_LIMITS.stages, `a pipeline has at most ${SPEC_LIMITS.stages} stages`),
    onFailure: z
      .object({ action: z.enum(['pause', 'fail']).default('pause'), timeout: duration(SPEC_LIMITS.pauseTimeoutMs).optional() })
      .strict()
      .optional(),
    /** The run's spending limit: metered spend so far plus a stage's estimate may not pass it. */
    budget: z
      .object({
        max: moneySchema,
        currency: z
          .string()
          .regex(/^[A-Z]{3}$/, 'must be an ISO 4217 currency code such as "USD"')
          .optional(),
        onExceed: z.enum(['pause', 'fail']).default('pause'),
      })
      .strict()
      .optional(),
    /** Watch the deployed model's realised ROI over a sliding window; below the threshold, a roi.below event is emitted. */
    watch: z
      .object({ minRealisedRoi: roiRatio, window: duration(SPEC_LIMITS.watchWindowMs) })
      .strict()
      .optional(),
  })
  .strict();

export type PipelineSpec = z.infer<typeof pipelineSpecSchema>;
export type StageSpec = z.infer<typeof stageSpecSchema>;

export interface SpecIssue {
  /** e.g. `stages[2].params.sparsity` */
  path: string;
  message: string;
  code:
    | 'SPEC_INVALID'
    | 'BUDGET_INVALID'
    | 'WATCH_INVALID'
    | 'UNKNOWN_PLUGIN'
    | 'PLUGIN_PARAMS_INVALID'
    | 'UNKNOWN_PARAM'
    | 'DUPLICATE_STAGE_ID'
    | 'UNKNOWN_DEPENDENCY'
    | 'MISSING_INPUT'
    | 'TOO_PARALLEL'
    | 'GANG_CAPACITY';
}

export class SpecValidationError extends Error {
  constructor(readonly issues: SpecIssue[]) {
    super(`pipeline spec is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    this.name = 'SpecValidationError';
  }
}

export interface ResolveOptions {
  taskQueues: { cpu: string; gpu: string };
  /** The configured price sheet: budgets are priced with it (merged with the ledger stage's override). Budgets are refused without one. */
  priceSheet?: PriceSheet;
}

/** The plugin whose params declare revenue, costs and a price-sheet override. */
export const LEDGER_PLUGIN = 'core:roi-ledger';

/** A resolved spec: what the workflow runs, plus what the engine keeps for itself. */
export type ResolvedSpec = RunPipelineInput & {
  onFailure: { action: 'pause' | 'fail'; timeoutMs: number };
  /** Each stage's params with its plugin's defaults applied (what estimates compare). */
  parsedParams: Record<string, unknown>;
  /** The deployed model's ROI watch, when the spec declares one. */
  watch?: { minRealisedRoi: string; windowMs: number };
};

export const DEFAULT_RETRY: RetrySpec = {
  maximumAttempts: 3,
  initialIntervalMs: 1000,
  backoffCoefficient: 2,
  maximumIntervalMs: 30_000,
  nonRetryableErrorTypes: [],
};
const DEFAULT_START_TO_CLOSE_MS = 60 * 60_000;
const DEFAULT_HEARTBEAT_MS = 60_000;
export const DEFAULT_PAUSE_TIMEOUT_MS = 7 * 24 * 3_600_000;

/** Reads a spec from JSON or YAML text. */
export function parseSpecText(text: string): unknown {
  const t = text.trim();
  try {
    return t.startsWith('{') ? JSON.parse(t) : parseYaml(t);
  } catch (e) {
    throw new SpecValidationError([{ path: '', message: `not valid JSON or YAML: ${(e as Error).message}`, code: 'SPEC_INVALID' }]);
  }
}

/**
 * Validates a spec against the registry and resolves it into what the workflow runs.
 * Collects every problem it finds; throws SpecValidationError naming each path.
 */
export function resolveSpec(raw: unknown, registry: StageRegistry, opts: ResolveOptions): ResolvedSpec {
  const size = JSON.stringify(raw ?? null).length;
  if (size > SPEC_LIMITS.specBytes)
    throw new SpecValidationError([{ path: '', message: `the spec is ${size} bytes of JSON; at most ${SPEC_LIMITS.specBytes}`, code: 'SPEC_INVALID' }]);
  const parsed = pipelineSpecSchema.safeParse(raw);
  if (!parsed.success)
    throw new SpecValidationError(parsed.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message, code: 'SPEC_INVALID' as const })));
  const spec = parsed.data;
  const issues: SpecIssue[] = [];
  const seen = new Map<string, number>();
  const producers = new Map<string, string[]>(); // stage id -> kinds produced
  const ancestors = new Map<string, string[]>(); // stage id -> all earlier stages it depends on, nearest first
  const stages: ResolvedStage[] = [];
  const parsedParams: Record<string, unknown> = {};

  spec.stages.forEach((s, i) => {
    const at = `stages[${i}]`;
    if (seen.has(s.id)) issues.push({ path: `${at}.id`, message: `duplicate stage id "${s.id}" (also stages[${seen.get(s.id)}])`, code: 'DUPLICATE_STAGE_ID' });
    const plugin = registry.get(s.plugin, s.version);
    const needs = s.needs ?? (i > 0 ? [spec.stages[i - 1]!.id] : []);
    needs.forEach((n, j) => {
      if (!seen.has(n)) issues.push({ path: `${at}.needs[${j}]`, message: `"${n}" is not an earlier stage`, code: 'UNKNOWN_DEPENDENCY' });
    });
    const anc = uniq(needs.flatMap((n) => [n, ...(ancestors.get(n) ?? [])]));
    ancestors.set(s.id, anc);
    seen.set(s.id, i);
    if (!plugin) {
      const known = registry.list().map((p) => p.name);
      issues.push({
        path: `${at}.plugin`,
        message: `unknown stage plugin "${s.plugin}${s.version ? `@${s.version}` : ''}"; known: ${uniq(known).join(', ') || 'none'}`,
        code: 'UNKNOWN_PLUGIN',
      });
      producers.set(s.id, []);
      return;
    }
    const params = plugin.paramsSchema.safeParse(s.params);
    if (!params.success) {
      for (const pi of params.error.issues)
        issues.push({ path: `${at}.params${formatPath(pi.path, true)}`, message: pi.message, code: 'PLUGIN_PARAMS_INVALID' });
    }
    // A mistyped key would be dropped silently by a lenient schema and the stage would run on defaults.
    for (const k of unknownParamKeys(paramsJsonSchema(plugin), s.params)) {
      issues.push({ path: `${at}.params${k}`, message: `${plugin.name} has no such param (misspelt?)`, code: 'UNKNOWN_PARAM' });
    }
    const inputs: Record<string, string> = {};
    for (const kind of Object.keys(s.inputs ?? {})) {
      if (!plugin.consumes.includes(kind)) {
        issues.push({
          path: `${at}.inputs.${kind}`,
          message: `${plugin.name} consumes no "${kind}" (it consumes ${plugin.consumes.join(', ') || 'nothing'})`,
          code: 'MISSING_INPUT',
        });
      }
    }
    for (const kind of plugin.consumes) {
      const chosen = s.inputs?.[kind];
      if (chosen !== undefined) {
        if (!anc.includes(chosen) || !(producers.get(chosen) ?? []).includes(kind)) {
          issues.push({ path: `${at}.inputs.${kind}`, message: `stage "${chosen}" is not an earlier dependency producing "${kind}"`, code: 'MISSING_INPUT' });
        } else inputs[kind] = chosen;
        continue;
      }
      const from = anc.find((a) => (producers.get(a) ?? []).includes(kind));
      if (from === undefined)
        issues.push({
          path: `${at}.plugin`,
          message: `${plugin.name} consumes "${kind}" but no earlier stage it depends on produces it`,
          code: 'MISSING_INPUT',
        });
      else inputs[kind] = from;
    }
    producers.set(s.id, plugin.produces);
    const retry: RetrySpec = {
      maximumAttempts: s.retry?.maximumAttempts ?? plugin.retry?.maximumAttempts ?? DEFAULT_RETRY.maximumAttempts,
      initialIntervalMs: ms(s.retry?.initialInterval) ?? plugin.retry?.initialIntervalMs ?? DEFAULT_RETRY.initialIntervalMs,
      backoffCoefficient: s.retry?.backoffCoefficient ?? plugin.retry?.backoffCoefficient ?? DEFAULT_RETRY.backoffCoefficient,
      maximumIntervalMs: ms(s.retry?.maximumInterval) ?? plugin.retry?.maximumIntervalMs ?? DEFAULT_RETRY.maximumIntervalMs,
      nonRetryableErrorTypes: uniq([...(plugin.retry?.nonRetryableErrorTypes ?? []), ...(s.retry?.nonRetryableErrorTypes ?? [])]),
    };
    const parsedStageParams = params.success ? params.data : s.params;
    parsedParams[s.id] = parsedStageParams;
    const startToCloseMs = ms(s.timeouts?.startToClose) ?? plugin.timeouts?.startToCloseMs ?? DEFAULT_START_TO_CLOSE_MS;
    const heartbeatMs = ms(s.timeouts?.heartbeat) ?? plugin.timeouts?.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    if (heartbeatMs > startToCloseMs)
      issues.push({
        path: `${at}.timeouts.heartbeat`,
        message: `the heartbeat timeout (${formatDuration(heartbeatMs)}) must not exceed startToClose (${formatDuration(startToCloseMs)})`,
        code: 'SPEC_INVALID',
      });
    stages.push({
      id: s.id,
      plugin: plugin.name,
      pluginVersion: plugin.version,
      params: s.params,
      needs,
      inputs,
      produces: plugin.produces,
      taskQueue: opts.taskQueues[plugin.resource],
      retry,
      startToCloseMs,
      heartbeatMs,
      replicas: plugin.dataParallel && params.success ? Math.max(1, plugin.dataParallel.replicas(parsedStageParams)) : 1,
      cache: s.cache ?? false,
    });
  });
  if (!issues.length) {
    const width = maxParallel(stages, ancestors);
    if (width.length > SPEC_LIMITS.parallelStages) {
      issues.push({
        path: 'stages',
        message: `${width.length} stages could run at the same time (${width.slice(0, 5).join(', ')}, …); at most ${SPEC_LIMITS.parallelStages} — chain some with needs`,
        code: 'TOO_PARALLEL',
      });
    }
  }
  const ledger = stages.find((s) => s.plugin === LEDGER_PLUGIN);
  const ledgerParams = (ledger ? parsedParams[ledger.id] : undefined) as { priceSheet?: unknown; revenue?: { kind?: string } } | undefined;
  const budget = issues.length ? undefined : resolveBudget(spec, ledgerParams, opts, issues);
  if (spec.watch && ledgerParams?.revenue?.kind !== 'per-prediction') {
    issues.push({
      path: 'watch',
      message: `a realised-ROI watch needs a ${LEDGER_PLUGIN} stage with a per-prediction revenue model (served predictions are the realised revenue)${ledger ? `; stage ${ledger.id} declares ${ledgerParams?.revenue?.kind ?? 'none'}` : ''}`,
      code: 'WATCH_INVALID',
    });
  }
  if (issues.length) throw new SpecValidationError(issues);
  return {
    pipeline: spec.name,
    spec: raw,
    stages,
    onFailure: { action: spec.onFailure?.action ?? 'pause', timeoutMs: ms(spec.onFailure?.timeout) ?? DEFAULT_PAUSE_TIMEOUT_MS },
    parsedParams,
    ...(budget ? { budget } : {}),
    ...(spec.watch ? { watch: { minRealisedRoi: spec.watch.minRealisedRoi, windowMs: ms(spec.watch.window)! } } : {}),
  };
}

/** The spec's run and stage budgets in the price sheet's currency, priced with the sheet the ledger stage will book with. */
function resolveBudget(
  spec: PipelineSpec,
  ledgerParams: { priceSheet?: unknown } | undefined,
  opts: ResolveOptions,
  issues: SpecIssue[],
): BudgetInput | undefined {
  const staged = spec.stages.filter((s) => s.budget);
  if (!spec.budget && staged.length === 0) return undefined;
  const where = spec.budget ? 'budget' : `stages[${spec.stages.indexOf(staged[0]!)}].budget`;
  if (!opts.priceSheet) {
    issues.push({ path: where, message: 'this host has no price sheet, so spend cannot be priced against a budget', code: 'BUDGET_INVALID' });
    return undefined;
  }
  let sheet: PriceSheet;
  try {
    sheet = mergePriceSheet(opts.priceSheet, ledgerParams?.priceSheet as never, 'priceSheet');
  } catch (e) {
    issues.push({ path: where, message: (e as Error).message, code: 'BUDGET_INVALID' });
    return undefined;
  }
  const currency = spec.budget?.currency ?? sheet.currency;
  if (currency !== sheet.currency) {
    issues.push({
      path: 'budget.currency',
      message: `spend is priced in ${sheet.currency} (the price sheet's currency), so a budget in ${currency} cannot be compared with it`,
      code: 'BUDGET_INVALID',
    });
    return undefined;
  }
  const onExceed = spec.budget?.onExceed ?? 'pause';
  return {
    currency,
    ...(spec.budget ? { max: spec.budget.max } : {}),
    onExceed,
    stages: Object.fromEntries(staged.map((s) => [s.id, { max: s.budget!.max, onExceed: s.budget!.onExceed ?? onExceed }])),
    priceSheet: sheet,
  };
}

/**
 * The widest set of stages none of which depends on another, i.e. how many may run at once
 * (Dilworth: stages − a maximum matching of the "is an ancestor of" relation). Specs are bounded
 * to SPEC_LIMITS.stages, so the cubic matching stays small.
 */
export function maxParallel(stages: { id: string }[], ancestors: Map<string, string[]>): string[] {
  const ids = stages.map((s) => s.id);
  const index = new Map(ids.map((id, i) => [id, i]));
  // later[i]: stages that depend (transitively) on stage i.
  const later: number[][] = ids.map(() => []);
  ids.forEach((id, j) => {
    for (const a of ancestors.get(id) ?? []) {
      const i = index.get(a);
      if (i !== undefined) later[i]!.push(j);
    }
  });
  const matchOfRight = new Array<number>(ids.length).fill(-1);
  const tryMatch = (u: number, seen: boolean[]): boolean => {
    for (const v of later[u]!) {
      if (seen[v]) continue;
      seen[v] = true;
      if (matchOfRight[v] === -1 || tryMatch(matchOfRight[v]!, seen)) {
        matchOfRight[v] = u;
        return true;
      }
    }
    return false;
  };
  for (let u = 0; u < ids.length; u++) tryMatch(u, new Array<boolean>(ids.length).fill(false));
  // König: from unmatched left vertices, alternate (any edge left→right, matched edge right→left).
  const visL = new Array<boolean>(ids.length).fill(false);
  const visR = new Array<boolean>(ids.length).fill(false);
  const leftMatched = new Set(matchOfRight.filter((u) => u >= 0));
  const stack = ids.map((_, u) => u).filter((u) => !leftMatched.has(u));
  for (const u of stack) visL[u] = true;
  while (stack.length) {
    const u = stack.pop()!;
    for (const v of later[u]!) {
      if (visR[v]) continue;
      visR[v] = true;
      const w = matchOfRight[v]!;
      if (w >= 0 && !visL[w]) {
        visL[w] = true;
        stack.push(w);
      }
    }
  }
  // Minimum vertex cover = (left not visited) ∪ (right visited); the antichain is what no cover touches on either side.
  return ids.filter((_, i) => visL[i] && !visR[i]);
}

const jsonSchemas = new WeakMap<object, JsonSchema>();
type JsonSchema = { [k: string]: unknown };

function paramsJsonSchema(plugin: { paramsSchema: z.ZodType }): JsonSchema {
  let js = jsonSchemas.get(plugin.paramsSchema);
  if (!js) jsonSchemas.set(plugin.paramsSchema, (js = z.toJSONSchema(plugin.paramsSchema, { unrepresentable: 'any', io: 'input' }) as JsonSchema));
  return js;
}

/** Keys of `value` that the params' JSON Schema does not know, as paths (`.source.lable`). Records and loose objects allow any key. */
export function unknownParamKeys(schema: JsonSchema, value: unknown, root: JsonSchema = schema, path = ''): string[] {
  const ref = typeof schema.$ref === 'string' ? resolveRef(root, schema.$ref) : undefined;
  if (ref) return unknownParamKeys(ref, value, root, path);
  const branches = (schema.anyOf ?? schema.oneOf) as JsonSchema[] | undefined;
  if (Array.isArray(branches)) {
    // The value is fine if one branch knows all its keys; else report the branch that knows the most.
    let best: string[] | undefined;
    for (const b of branches) {
      const u = unknownParamKeys(b, value, root, path);
      if (u.length === 0) return [];
      if (!best || u.length < best.length) best = u;
    }
    return best ?? [];
  }
  if (Array.isArray(schema.allOf)) return [...new Set((schema.allOf as JsonSchema[]).flatMap((b) => unknownParamKeys(b, value, root, path)))];
  if (Array.isArray(value)) {
    const items = schema.items as JsonSchema | undefined;
    return items && typeof items === 'object' ? value.flatMap((v, i) => unknownParamKeys(items, v, root, `${path}[${i}]`)) : [];
  }
  if (!value || typeof value !== 'object' || !(schema.type === 'object' || schema.properties)) return [];
  const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
  const extra = schema.additionalProperties;
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) {
    const at = `${path}.${k}`;
    if (k in props) out.push(...unknownParamKeys(props[k]!, v, root, at));
    else if (extra && typeof extra === 'object' && Object.keys(extra).length) out.push(...unknownParamKeys(extra as JsonSchema, v, root, at));
    else if (extra === undefined || extra === false) {
      if (!schema.patternProperties && !schema.propertyNames) out.push(at);
    }
  }
  return out;
}

function resolveRef(root: JsonSchema, ref: string): JsonSchema | undefined {
  if (!ref.startsWith('#/')) return undefined;
  let cur: unknown = root;
  for (const part of ref.slice(2).split('/'))
    cur = cur && typeof cur === 'object' ? (cur as JsonSchema)[part.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined;
  return cur && typeof cur === 'object' ? (cur as JsonSchema) : undefined;
}

function ms(v: string | number | undefined): number | undefined {
  return v === undefined ? undefined : parseDurationMs(v);
}

function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** `['stages', 2, 'params', 'sparsity']` → `stages[2].params.sparsity` */

/** A run's one-line summary in Temporal's UI: `<pipeline>: a → b → c`. */
export function specSummary(input: { pipeline: string; stages: { id: string }[] }): string {
  return `${input.pipeline}: ${input.stages.map((s) => s.id).join(' → ')}`;
}
