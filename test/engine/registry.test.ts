import { cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { z as z3 } from 'zod/v3';
import { describe, expect, it } from 'vitest';
import { PLUGIN_API_VERSION } from '../../plugins/contract.js';
import { apiVersionProblem, CONTRACT_VERSIONS } from '../../plugins/contract-versions.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { contractProblems, PluginContractError, StageRegistry } from '../../plugins/registry.js';
import { writeNoteStage } from '../fixtures/plugins/test-stages.js';

const fixtures = path.resolve(import.meta.dirname, '../fixtures');
const checkout = path.resolve(import.meta.dirname, '../..');

describe('stage plugin registry', () => {
  it('loads external plugins from a file and from a folder', async () => {
    const r = new StageRegistry();
    const loaded = await loadExternalPlugins(r, [path.join(fixtures, 'plugins')], { cwd: process.cwd() });
    expect(loaded.sort()).toEqual(['test:burn@1.0.0', 'test:shout@1.0.0', 'test:wait@1.0.0', 'test:write-note@1.0.0']);
    expect(r.get('test:shout')?.version).toBe('1.0.0');
  });

  it('refuses a plugin that breaks the contract, naming the plugin and each problem', async () => {
    const r = new StageRegistry();
    const err = await loadExternalPlugins(r, [path.join(fixtures, 'bad-plugins/no-version.ts')], { cwd: process.cwd() }).catch((e) => e);
    expect(err).toBeInstanceOf(PluginContractError);
    expect(err.message).toContain('acme:broken');
    expect(err.message).toContain('version must be semver');
    expect(err.message).toContain('resource must be "cpu" or "gpu"');
    expect(r.list()).toEqual([]);
  });

  it('refuses a duplicate name@version and an entry that does not exist', async () => {
    const r = new StageRegistry().register(writeNoteStage);
    expect(() => r.register({ ...writeNoteStage })).toThrow(/test:write-note@1.0.0 is already registered/);
    await expect(loadExternalPlugins(r, ['./no/such/plugin.ts'], { cwd: process.cwd() })).rejects.toThrow(
      /neither a file, a folder nor an installed npm package/,
    );
  });

  it('keeps several versions and resolves the newest by default', () => {
    const r = new StageRegistry()
      .register({ ...writeNoteStage, version: '1.2.0' })
      .register({ ...writeNoteStage, version: '1.10.0' })
      .register({ ...writeNoteStage, version: '1.10.0-rc.1' })
      .freeze();
    expect(r.get('test:write-note')?.version).toBe('1.10.0');
    // semver order: numeric, and a pre-release comes before its release.
    expect(r.list().map((p) => p.version)).toEqual(['1.2.0', '1.10.0-rc.1', '1.10.0']);
    expect(contractProblems({ ...writeNoteStage, version: 'v1.0.0' })).toContainEqual(expect.stringContaining('version must be semver'));
    expect(r.get('test:write-note', '1.2.0')?.version).toBe('1.2.0');
    expect(() => r.register({ ...writeNoteStage, version: '2.0.0' })).toThrow(/frozen/);
  });

  it('refuses, at load, a plugin written for plugin API 1, saying what changed since', async () => {
    expect(PLUGIN_API_VERSION).toBe(2);
    const r = new StageRegistry();
    const err = await loadExternalPlugins(r, [path.join(fixtures, 'bad-plugins/api-v1.ts')], { cwd: process.cwd() }).catch((e) => e);
    expect(err).toBeInstanceOf(PluginContractError);
    expect(err.message).toContain('plugin acme:legacy-note');
    expect(err.message).toContain('it is written for plugin API 1; this Capstan speaks 2: ');
    expect(err.message).toContain('ctx.artifacts was replaced by ctx.output(kind, write) / ctx.localPath(ref) / ctx.checkpointDir() / ctx.checkpointUri()');
    expect(err.message).toContain('see docs/plugin-contract.md');
    expect(r.list()).toEqual([]);
  });

  it('refuses a plugin written for a newer plugin API: upgrade Capstan', () => {
    const p = { ...writeNoteStage, name: 'acme:future', apiVersion: PLUGIN_API_VERSION + 1 };
    expect(() => new StageRegistry().register(p)).toThrow(
      `plugin acme:future (from built-in) is refused: it is written for plugin API ${PLUGIN_API_VERSION + 1}; this Capstan speaks ${PLUGIN_API_VERSION}: upgrade Capstan to a release that speaks plugin API ${PLUGIN_API_VERSION + 1}`,
    );
    expect(contractProblems({ ...writeNoteStage, apiVersion: undefined })).toContainEqual(
      expect.stringContaining('apiVersion must be the plugin API version the plugin is written for (this Capstan speaks 2), got undefined'),
    );
    expect(contractProblems({ ...writeNoteStage, apiVersion: '2' })).toContainEqual(expect.stringContaining('got "2"'));
  });

  it('keeps one entry per plugin API version, each after the first saying what broke', () => {
    expect(CONTRACT_VERSIONS.map((v) => v.version)).toEqual(Array.from({ length: PLUGIN_API_VERSION }, (_, i) => i + 1));
    for (const v of CONTRACT_VERSIONS.slice(1)) expect(v.breaking.length, `plugin API ${v.version}`).toBeGreaterThan(0);
    expect(apiVersionProblem(PLUGIN_API_VERSION)).toBeUndefined();
  });

  it('accepts a zod v4 schema from another copy of zod (a compiled plugin brings its own) and refuses zod 3', async () => {
    // A second copy of zod outside the checkout's node_modules: its classes are not the host's.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'capstan-zod-copy-'));
    try {
      const esmOnly = (f: string) => !/[\\/]src([\\/]|$)|\.d\.c?ts$|\.cjs$/.test(f);
      await cp(path.join(checkout, 'node_modules/zod'), path.join(dir, 'node_modules/zod'), { recursive: true, filter: esmOnly });
      const other = (await import(pathToFileURL(path.join(dir, 'node_modules/zod/index.js')).href)) as typeof import('zod');
      const paramsSchema = other.z.object({ text: other.z.string().default('hi'), times: other.z.number().int().min(1).default(2) });
      expect(other.z).not.toBe(z);
      const r = new StageRegistry().register({ ...writeNoteStage, name: 'acme:own-zod', paramsSchema });
      expect(r.list()[0]!.paramsJsonSchema).toMatchObject({
        type: 'object',
        properties: { text: { type: 'string', default: 'hi' }, times: { type: 'integer', minimum: 1 } },
      });
      expect(r.get('acme:own-zod')!.paramsSchema.safeParse({ times: 0 }).success).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const zod3 = { ...writeNoteStage, name: 'acme:zod-three', paramsSchema: z3.object({ text: z3.string() }) };
    expect(() => new StageRegistry().register(zod3 as never)).toThrow(/acme:zod-three .*paramsSchema is a zod 3 schema; Capstan needs a zod v4 schema/);
    expect(contractProblems({ ...writeNoteStage, paramsSchema: { parse() {} } })).toContainEqual(
      expect.stringContaining('paramsSchema must be a zod v4 schema'),
    );
  });
});
