import type { StagePlugin } from './contract.js';
import { StageRegistry } from './registry.js';
import { loadExternalPlugins } from './loader.js';

/** The built-in stage plugins. */
export function builtinStages(): StagePlugin<any>[] {
  return [];
}

/** A frozen registry with the built-ins and the external plugins named in CAPSTAN_PLUGINS. */
export async function buildRegistry(opts: { external: string[]; cwd: string }): Promise<StageRegistry> {
  const registry = new StageRegistry();
  for (const p of builtinStages()) registry.register(p);
  await loadExternalPlugins(registry, opts.external, { cwd: opts.cwd });
  return registry.freeze();
}
