import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { parseDurationMs } from '../../lib/duration.js';
import type { StagePlugin } from '../contract.js';
import { defineCommandStage, placeholderProblems } from './define-command-stage.js';

/** File names the loader takes for a stage manifest (docs/stage-protocol.md §6). */
export const MANIFEST_FILES = ['capstan-stage.yaml', 'capstan-stage.yml', 'capstan-stage.json'];

export function isManifestFile(file: string): boolean {
  const base = path.basename(file);
  return MANIFEST_FILES.includes(base) || /\.stage\.(ya?ml|json)$/.test(base);
}

const duration = (what: string) =>
  z.union([z.string(), z.number()]).transform((v, c) => {
    const ms = parseDurationMs(v);
    if (ms === undefined) {
      c.addIssue({ code: 'custom', message: `${what} must be a duration like "30s", "5m" or "2h"; got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return ms;
  });

const kind = z.string().regex(/^[a-z][a-z0-9-]*$/, 'must be an artifact kind (lower-case words joined by -)');

export const stageManifestSchema = z
  .object({
    name: z.string(),
    version: z.string(),
    description: z.string().min(1),
    /** JSON Schema of the params; default: an object with no params. */
    params: z.record(z.string(), z.unknown()).default({ type: 'object', additionalProperties: false, properties: {} }),
    consumes: z.array(kind).default([]),
    produces: z.array(kind).default([]),
    resource: z.enum(['cpu', 'gpu']).default('cpu'),
    command: z.array(z.string().min(1)).min(1, 'command needs at least the program'),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name'), z.string()).default({}),
    retry: z
      .object({
        maximumAttempts: z.number().int().min(1).max(100).optional(),
        initialInterval: duration('retry.initialInterval').optional(),
        backoffCoefficient: z.number().min(1).max(10).optional(),
        maximumInterval: duration('retry.maximumInterval').optional(),
        nonRetryableErrorTypes: z.array(z.string()).optional(),
      })
      .strict()
      .optional(),
    timeouts: z
      .object({ startToClose: duration('timeouts.startToClose').optional(), heartbeat: duration('timeouts.heartbeat').optional() })
      .strict()
      .optional(),
    stopGrace: duration('stopGrace').optional(),
  })
  .strict();

export type StageManifest = z.input<typeof stageManifestSchema>;

/** A manifest that cannot become a stage: names the file and every problem. */
export class ManifestError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`stage manifest ${file} is refused: ${problems.join('; ')}`);
    this.name = 'ManifestError';
  }
}

/** Reads a stage manifest (YAML or JSON) and makes the command stage it declares. */
export async function loadStageManifest(file: string): Promise<StagePlugin<unknown>> {
  let raw: unknown;
  try {
    const text = await readFile(file, 'utf8');
    raw = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new ManifestError(file, [`cannot be read: ${(e as Error).message}`]);
  }
  return stageFromManifest(raw, { file });
}

/** The command stage a parsed manifest declares; `file`'s folder is `{dir}`. */
export function stageFromManifest(raw: unknown, o: { file: string }): StagePlugin<unknown> {
  const parsed = stageManifestSchema.safeParse(raw);
  if (!parsed.success)
    throw new ManifestError(
      o.file,
      parsed.error.issues.map((i) => `${i.path.join('.') || '(manifest)'}: ${i.message}`),
    );
  const m = parsed.data;
  const problems = placeholderProblems(m.command);
  const props = (m.params as { properties?: Record<string, unknown> }).properties ?? {};
  for (const arg of m.command)
    for (const p of arg.matchAll(/\{params\.([A-Za-z0-9_]+)\}/g))
      if (!(p[1]! in props)) problems.push(`command uses {params.${p[1]}}, which params does not declare`);
  let paramsSchema: z.ZodType;
  try {
    paramsSchema = z.fromJSONSchema(m.params as never);
  } catch (e) {
    problems.push(`params is not a JSON Schema this host understands: ${(e as Error).message}`);
    paramsSchema = z.never();
  }
  if (problems.length) throw new ManifestError(o.file, problems);
  const timeouts = m.timeouts
    ? {
        ...(m.timeouts.startToClose !== undefined ? { startToCloseMs: m.timeouts.startToClose } : {}),
        ...(m.timeouts.heartbeat !== undefined ? { heartbeatMs: m.timeouts.heartbeat } : {}),
      }
    : undefined;
  const retry = m.retry
    ? {
        ...(m.retry.maximumAttempts !== undefined ? { maximumAttempts: m.retry.maximumAttempts } : {}),
        ...(m.retry.initialInterval !== undefined ? { initialIntervalMs: m.retry.initialInterval } : {}),
        ...(m.retry.backoffCoefficient !== undefined ? { backoffCoefficient: m.retry.backoffCoefficient } : {}),
        ...(m.retry.maximumInterval !== undefined ? { maximumIntervalMs: m.retry.maximumInterval } : {}),
        ...(m.retry.nonRetryableErrorTypes ? { nonRetryableErrorTypes: m.retry.nonRetryableErrorTypes } : {}),
      }
    : undefined;
  return defineCommandStage({
    name: m.name,
    version: m.version,
    description: m.description,
    paramsSchema,
    paramsJsonSchema: m.params,
    consumes: m.consumes,
    produces: m.produces,
    resource: m.resource,
    command: m.command,
    dir: path.dirname(path.resolve(o.file)),
    env: m.env,
    ...(m.stopGrace !== undefined ? { stopGraceMs: m.stopGrace } : {}),
    ...(retry ? { retry } : {}),
    ...(timeouts ? { timeouts } : {}),
  }) as StagePlugin<unknown>;
}
