import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseDurationMs } from '../lib/duration.js';
import type { ResolvedStage, RetrySpec, RunPipelineInput } from '../workflows/types.js';
import type { StageRegistry } from '../plugins/registry.js';
import { formatPath } from '../lib/format-path.js';

const duration = z.union([z.number().int().nonnegative(), z.string()]).refine((v) => parseDurationMs(v) !== undefined, {
  message: 'must be a duration like "30s", "5m", "1h" or a number of milliseconds',
});

export const stageRetrySpecSchema = z
  .object({
    maximumAttempts: z.number().int().min(1).max(100).optional(),
    initialInterval: duration.optional(),
    backoffCoefficient: z.number().min(1).max(10).optional(),
    maximumInterval: duration.optional(),
    nonRetryableErrorTypes: z.array(z.string()).optional(),
  })
  .strict();

export const stageSpecSchema = z
  .object({
    id: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be lower-case letters, digits, "-" or "_", starting with a letter'),
    plugin: z.string().min(1),
    /** Pin an exact plugin version; the newest registered one otherwise. */
    version: z.string().optional(),
    params: z.record(z.string(), z.unknown()).default({}),
    /** Stage ids this stage waits for; the previous stage when omitted, [] to start at once. */
    needs: z.array(z.string()).optional(),
    /** Pick which stage provides a consumed artifact kind, when several could. */
    inputs: z.record(z.string(), z.string()).optional(),
    retry: stageRetrySpecSchema.optional(),
    timeouts: z.object({ startToClose: duration.optional(), heartbeat: duration.optional() }).strict().optional(),
    /** Reuse the outputs of an earlier successful run with the same plugin version, params and inputs. */
    cache: z.boolean().optional(),
  })
  .strict();

export const pipelineSpecSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/i, 'must be letters, digits, ".", "-" or "_" (up to 63)'),
    description: z.string().optional(),
    stages: z.array(stageSpecSchema).min(1, 'a pipeline needs at least one stage'),
    onFailure: z
      .object({ action: z.enum(['pause', 'fail']).default('pause'), timeout: duration.optional() })
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
  code: 'SPEC_INVALID' | 'UNKNOWN_PLUGIN' | 'PLUGIN_PARAMS_INVALID' | 'DUPLICATE_STAGE_ID' | 'UNKNOWN_DEPENDENCY' | 'MISSING_INPUT';
}

export class SpecValidationError extends Error {
  constructor(readonly issues: SpecIssue[]) {
    super(`pipeline spec is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    this.name = 'SpecValidationError';
  }
}

export interface ResolveOptions {
  taskQueues: { cpu: string; gpu: string };
}

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
export function resolveSpec(raw: unknown, registry: StageRegistry, opts: ResolveOptions): RunPipelineInput & { onFailure: { action: 'pause' | 'fail'; timeoutMs: number } } {
  const parsed = pipelineSpecSchema.safeParse(raw);
  if (!parsed.success) throw new SpecValidationError(parsed.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message, code: 'SPEC_INVALID' as const })));
  const spec = parsed.data;
  const issues: SpecIssue[] = [];
  const seen = new Map<string, number>();
  const producers = new Map<string, string[]>(); // stage id -> kinds produced
  const ancestors = new Map<string, string[]>(); // stage id -> all earlier stages it depends on, nearest first
  const stages: ResolvedStage[] = [];

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
        message: `unknown stage plugin "${s.plugin}${s.version ? '@' + s.version : ''}"; known: ${uniq(known).join(', ') || 'none'}`,
        code: 'UNKNOWN_PLUGIN',
      });
      producers.set(s.id, []);
      return;
    }
    const params = plugin.paramsSchema.safeParse(s.params);
    if (!params.success) {
      for (const pi of params.error.issues) issues.push({ path: `${at}.params${formatPath(pi.path, true)}`, message: pi.message, code: 'PLUGIN_PARAMS_INVALID' });
    }
    const inputs: Record<string, string> = {};
    for (const kind of plugin.consumes) {
      const chosen = s.inputs?.[kind];
      if (chosen !== undefined) {
        if (!anc.includes(chosen) || !(producers.get(chosen) ?? []).includes(kind)) {
          issues.push({ path: `${at}.inputs.${kind}`, message: `stage "${chosen}" is not an earlier dependency producing "${kind}"`, code: 'MISSING_INPUT' });
        } else inputs[kind] = chosen;
        continue;
      }
      const from = anc.find((a) => (producers.get(a) ?? []).includes(kind));
      if (from === undefined) issues.push({ path: `${at}.plugin`, message: `${plugin.name} consumes "${kind}" but no earlier stage it depends on produces it`, code: 'MISSING_INPUT' });
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
    const parsedParams = params.success ? params.data : s.params;
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
      startToCloseMs: ms(s.timeouts?.startToClose) ?? plugin.timeouts?.startToCloseMs ?? DEFAULT_START_TO_CLOSE_MS,
      heartbeatMs: ms(s.timeouts?.heartbeat) ?? plugin.timeouts?.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      replicas: plugin.dataParallel && params.success ? Math.max(1, plugin.dataParallel.replicas(parsedParams)) : 1,
      cache: s.cache ?? false,
    });
  });
  if (issues.length) throw new SpecValidationError(issues);
  return {
    pipeline: spec.name,
    spec: raw,
    stages,
    onFailure: { action: spec.onFailure?.action ?? 'pause', timeoutMs: ms(spec.onFailure?.timeout) ?? DEFAULT_PAUSE_TIMEOUT_MS },
  };
}

function ms(v: string | number | undefined): number | undefined {
  return v === undefined ? undefined : parseDurationMs(v);
}

function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** `['stages', 2, 'params', 'sparsity']` → `stages[2].params.sparsity` */
