import { existsSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { isManifestFile, loadStageManifest, MANIFEST_FILES } from './command/manifest.js';
import type { StagePlugin } from './contract.js';
import { PluginContractError, type StageRegistry } from './registry.js';

const MODULE_EXT = /\.(m?js|ts|mts)$/;

/**
 * Loads external stage plugins into the registry. Each entry is a file, a folder or an npm
 * package name (resolved from `cwd`). A module may export plugins as `default` (one or an array),
 * as `plugins` (array) or as named exports. A stage manifest (`capstan-stage.yaml|yml|json` or
 * `*.stage.yaml`, docs/stage-protocol.md) declares a stage in any language. A folder gives its
 * manifest if it has one, else every module and manifest file directly inside it and the
 * manifest of each sub-folder. Fails on the first module or manifest that breaks the contract.
 */
export async function loadExternalPlugins(stages: StageRegistry, entries: string[], opts: { cwd: string }): Promise<string[]> {
  const loaded: string[] = [];
  for (const entry of entries.map((e) => e.trim()).filter(Boolean)) {
    for (const file of await moduleFiles(entry, opts.cwd)) {
      if (isManifestFile(file)) {
        let p: StagePlugin<unknown>;
        try {
          p = await loadStageManifest(file);
        } catch (e) {
          throw new PluginContractError(path.basename(path.dirname(file)), (e as Error).message, file);
        }
        stages.register(p as never, file);
        loaded.push(`${p.name}@${p.version}`);
        continue;
      }
      let mod: Record<string, unknown>;
      try {
        mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
      } catch (e) {
        throw new PluginContractError(path.basename(file), `module failed to load: ${(e as Error).message}`, file);
      }
      const candidates = pluginExports(mod);
      if (candidates.length === 0)
        throw new PluginContractError(path.basename(file), 'module exports no stage plugin (export one as default, as `plugins`, or by name)', file);
      for (const p of candidates) {
        stages.register(p as never, file);
        loaded.push(`${(p as { name: string }).name}@${(p as { version: string }).version}`);
      }
    }
  }
  return loaded;
}

function pluginExports(mod: Record<string, unknown>): unknown[] {
  const out = new Set<unknown>();
  const add = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(add);
    else if (v && typeof v === 'object' && 'name' in v && 'run' in v) out.add(v);
  };
  add(mod.default);
  add(mod.plugins);
  for (const [k, v] of Object.entries(mod)) if (k !== 'default' && k !== 'plugins') add(v);
  return [...out];
}

async function moduleFiles(entry: string, cwd: string): Promise<string[]> {
  const abs = path.resolve(cwd, entry);
  if (existsSync(abs)) {
    if (statSync(abs).isFile()) return [abs];
    const own = MANIFEST_FILES.map((f) => path.join(abs, f)).find((f) => existsSync(f));
    if (own) return [own];
    if (existsSync(path.join(abs, 'package.json'))) return [createRequire(path.join(abs, 'noop.js')).resolve(abs)];
    const out: string[] = [];
    for (const f of (await readdir(abs)).sort()) {
      const full = path.join(abs, f);
      if (statSync(full).isDirectory()) {
        const sub = MANIFEST_FILES.map((m) => path.join(full, m)).find((m) => existsSync(m));
        if (sub) out.push(sub);
      } else if ((MODULE_EXT.test(f) && !f.endsWith('.d.ts')) || isManifestFile(f)) out.push(full);
    }
    return out;
  }
  try {
    return [createRequire(path.join(cwd, 'noop.js')).resolve(entry)];
  } catch {
    throw new PluginContractError(entry, `CAPSTAN_PLUGINS entry "${entry}" is neither a file, a folder nor an installed npm package`);
  }
}
