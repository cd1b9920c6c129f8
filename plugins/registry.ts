import semver from 'semver';
import { z } from 'zod';
import type { StagePlugin } from './contract.js';
import { apiVersionProblem } from './contract-versions.js';

const NAME_RE = /^[a-z0-9][a-z0-9-]*:[a-z0-9][a-z0-9-]*$/;

/** Raised when a plugin does not satisfy the contract; names the plugin and the problem. */
export class PluginContractError extends Error {
  constructor(
    readonly plugin: string,
    readonly problem: string,
    readonly source?: string,
  ) {
    super(`plugin ${plugin}${source ? ` (from ${source})` : ''} is refused: ${problem}`);
    this.name = 'PluginContractError';
  }
}

/** Checks a value against the stage plugin contract; returns the list of problems (empty = fine). */
export function contractProblems(p: unknown): string[] {
  const problems: string[] = [];
  if (typeof p !== 'object' || p === null) return ['is not an object'];
  const o = p as Record<string, unknown>;
  if (typeof o.name !== 'string' || !NAME_RE.test(o.name)) problems.push(`name must look like "<scope>:<kebab-name>", got ${JSON.stringify(o.name)}`);
  if (typeof o.version !== 'string' || !/^\d/.test(o.version) || semver.parse(o.version)?.raw !== o.version)
    problems.push(`version must be semver (x.y.z), got ${JSON.stringify(o.version)}`);
  const apiProblem = apiVersionProblem(o.apiVersion);
  if (apiProblem) problems.push(apiProblem);
  if (typeof o.description !== 'string' || o.description.length === 0) problems.push('description is missing');
  const schemaProblem = zodSchemaProblem(o.paramsSchema);
  if (schemaProblem) problems.push(schemaProblem);
  for (const k of ['consumes', 'produces'] as const) {
    const v = o[k];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !/^[a-z][a-z0-9-]*$/.test(x)))
      problems.push(`${k} must be a list of artifact kinds (lower-case words)`);
  }
  if (o.resource !== 'cpu' && o.resource !== 'gpu') problems.push(`resource must be "cpu" or "gpu", got ${JSON.stringify(o.resource)}`);
  if (typeof o.run !== 'function') problems.push('run(ctx, params, inputs) is missing');
  if (o.dataParallel !== undefined) {
    const d = o.dataParallel as Record<string, unknown> | null;
    if (!d || typeof d.replicas !== 'function' || typeof d.reduce !== 'function')
      problems.push('dataParallel needs replicas(params) and reduce(ctx, params, inputs, results)');
  }
  if (problems.length === 0) {
    try {
      z.toJSONSchema(o.paramsSchema as z.ZodType, { unrepresentable: 'any' });
    } catch (e) {
      problems.push(`paramsSchema cannot be exported as JSON Schema: ${(e as Error).message}`);
    }
  }
  return problems;
}

/**
 * Why a value is not a zod v4 schema the host can use, or undefined. Duck-typed, not `instanceof`:
 * a plugin compiled in its own project brings its own copy of zod, whose classes are not the host's.
 * Zod v4 keeps its internals on `_zod` (the host's `z.toJSONSchema` reads them); zod 3 has `_def`.
 */
function zodSchemaProblem(s: unknown): string | undefined {
  const use = 'use the `z` exported by capstan/plugin, or zod 4';
  if (typeof s !== 'object' || s === null) return `paramsSchema must be a zod v4 schema (${use})`;
  const internals = (s as { _zod?: { version?: { major?: unknown } } })._zod;
  if (internals === undefined)
    return '_def' in s ? `paramsSchema is a zod 3 schema; Capstan needs a zod v4 schema (${use})` : `paramsSchema must be a zod v4 schema (${use})`;
  const major = internals.version?.major;
  if (major !== 4) return `paramsSchema is a zod ${JSON.stringify(major)} schema; Capstan needs a zod v4 schema (${use})`;
  if (typeof (s as { safeParse?: unknown }).safeParse !== 'function') return `paramsSchema has no safeParse method (${use})`;
  return undefined;
}

export interface PluginInfo {
  name: string;
  version: string;
  description: string;
  consumes: string[];
  produces: string[];
  resource: 'cpu' | 'gpu';
  dataParallel: boolean;
  paramsJsonSchema: unknown;
  source: string;
}

/**
 * The stage plugins this process knows. Checked at registration, then frozen.
 * Lookup is by name (the newest version wins) or by exact name@version.
 */
export class StageRegistry {
  private readonly byKey = new Map<string, { plugin: StagePlugin<unknown>; source: string }>();
  private frozen = false;

  register(plugin: StagePlugin<unknown>, source = 'built-in'): this {
    if (this.frozen) throw new Error(`registry is frozen; cannot register ${plugin?.name}`);
    const name = typeof plugin?.name === 'string' ? plugin.name : '<unnamed>';
    const problems = contractProblems(plugin);
    if (problems.length) throw new PluginContractError(name, problems.join('; '), source);
    const key = `${plugin.name}@${plugin.version}`;
    const existing = this.byKey.get(key);
    if (existing) throw new PluginContractError(name, `${key} is already registered (from ${existing.source})`, source);
    this.byKey.set(key, { plugin: plugin as StagePlugin<unknown>, source });
    return this;
  }

  freeze(): this {
    this.frozen = true;
    return this;
  }

  /** The plugin by name (newest version) or exact `name@version`. */
  get(name: string, version?: string): StagePlugin<unknown> | undefined {
    if (version) return this.byKey.get(`${name}@${version}`)?.plugin;
    let best: StagePlugin<unknown> | undefined;
    for (const { plugin } of this.byKey.values()) {
      if (plugin.name === name && (!best || semver.gt(plugin.version, best.version))) best = plugin;
    }
    return best;
  }

  list(): PluginInfo[] {
    return [...this.byKey.values()]
      .map(({ plugin, source }) => ({
        name: plugin.name,
        version: plugin.version,
        description: plugin.description,
        consumes: [...plugin.consumes],
        produces: plugin.produces,
        resource: plugin.resource,
        dataParallel: plugin.dataParallel !== undefined,
        // A manifest's own JSON Schema as its author wrote it; zod's export for the rest.
        paramsJsonSchema:
          (plugin as { paramsJsonSchema?: unknown }).paramsJsonSchema ?? z.toJSONSchema(plugin.paramsSchema, { unrepresentable: 'any', io: 'input' }),
        source,
      }))
      .sort((a, b) => (a.name === b.name ? semver.compare(a.version, b.version) : a.name < b.name ? -1 : 1));
  }
}
