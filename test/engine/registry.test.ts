import path from 'node:path';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { PLUGIN_API_VERSION } from '../../plugins/contract.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { contractProblems, PluginContractError, StageRegistry } from '../../plugins/registry.js';
import { writeNoteStage } from '../fixtures/plugins/test-stages.js';

const fixtures = path.resolve(import.meta.dirname, '../fixtures');

describe('stage plugin registry', () => {
  it('loads external plugins from a file and from a folder', async () => {
    const r = new StageRegistry();
    const loaded = await loadExternalPlugins(r, [path.join(fixtures, 'plugins')], { cwd: process.cwd() });
    expect(loaded.sort()).toEqual(['test:shout@1.0.0', 'test:wait@1.0.0', 'test:write-note@1.0.0']);
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
    await expect(loadExternalPlugins(r, ['./no/such/plugin.ts'], { cwd: process.cwd() })).rejects.toThrow(/neither a file, a folder nor an installed npm package/);
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

  it('refuses a plugin written for another plugin API version', () => {
    const p = { ...writeNoteStage, name: 'acme:old', apiVersion: PLUGIN_API_VERSION + 1, paramsSchema: z.object({}) };
    expect(() => new StageRegistry().register(p)).toThrow(/acme:old.*apiVersion must be 1/);
  });
});
