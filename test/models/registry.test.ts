import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../lib/db/types.js';
import { migrate } from '../../lib/db/migrate.js';
import { ModelRegistry, registryMigrations } from '../../serving/registry.js';
import { freshRegistryDb } from './db.js';
import { tempStore } from './fixtures.js';

const input = (over: Partial<Parameters<ModelRegistry['register']>[0]> = {}) => ({
  model: 'mnist',
  runId: 'run-a',
  stageId: 'deploy',
  artifactUri: 'artifact:registry/mnist/sha256-aa',
  sha256: 'aa',
  bytes: 1234,
  metrics: { testAccuracy: 0.91, tfBackend: 'wasm' },
  ...over,
});

describe.each(['sqlite', 'postgres'] as const)('model registry on %s', (kind) => {
  let db: Db;
  let reg: ModelRegistry;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const t = await tempStore();
    cleanup = t.cleanup;
    db = await freshRegistryDb(kind, t.root);
    reg = new ModelRegistry(db);
  }, 60_000);
  afterAll(async () => {
    await db.close();
    await cleanup();
  });

  it('migrations are idempotent', async () => {
    expect(await migrate(db, registryMigrations)).toEqual([]);
  });

  it('numbers versions per model name and keeps metrics', async () => {
    const a1 = await reg.register(input());
    const a2 = await reg.register(input({ runId: 'run-b', sha256: 'bb' }));
    const other = await reg.register(input({ model: 'fashion', runId: 'run-c' }));
    expect([a1.version.version, a2.version.version, other.version.version]).toEqual([1, 2, 1]);
    expect(a1.created && a2.created && other.created).toBe(true);
    const got = await reg.getVersion('mnist', 1);
    expect(got).toMatchObject({ model: 'mnist', version: 1, runId: 'run-a', stageId: 'deploy', sha256: 'aa', bytes: 1234, metrics: { testAccuracy: 0.91, tfBackend: 'wasm' } });
    expect((await reg.listVersions('mnist')).map((v) => v.version)).toEqual([2, 1]);
    expect(await reg.listModels()).toEqual(['fashion', 'mnist']);
  });

  it('records each version\'s format: tfjs-layers unless the version says onnx', async () => {
    const onnx = await reg.register(input({ model: 'formats', runId: 'run-onnx', format: 'onnx' }));
    const tfjs = await reg.register(input({ model: 'formats', runId: 'run-tfjs' }));
    expect([onnx.version.format, tfjs.version.format]).toEqual(['onnx', 'tfjs-layers']);
    expect((await reg.getVersion('formats', 1))?.format).toBe('onnx');
    expect((await reg.listVersions('formats')).map((v) => v.format)).toEqual(['tfjs-layers', 'onnx']);
    await reg.setAlias('formats', 'production', 1);
    expect((await reg.resolveAlias('formats'))?.format).toBe('onnx');
  });

  it('registering the same run + stage twice returns the same version', async () => {
    const again = await reg.register(input({ metrics: { testAccuracy: 0.5 } }));
    expect(again.created).toBe(false);
    expect(again.version.version).toBe(1);
    expect(again.version.metrics.testAccuracy).toBe(0.91);
    expect((await reg.listVersions('mnist')).length).toBe(2);
  });

  it('concurrent registrations get distinct versions; concurrent retries of one key get one', async () => {
    const many = await Promise.all(Array.from({ length: 8 }, (_, i) => reg.register(input({ model: 'busy', runId: `r${i}` }))));
    expect(many.map((r) => r.version.version).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const same = await Promise.all(Array.from({ length: 5 }, () => reg.register(input({ model: 'busy2', runId: 'same' }))));
    expect(new Set(same.map((r) => r.version.version))).toEqual(new Set([1]));
    expect(same.filter((r) => r.created).length).toBe(1);
  });

  it('aliases: set, resolve, roll back (one call), with history', async () => {
    expect(await reg.resolveAlias('mnist')).toBeUndefined();
    await reg.setAlias('mnist', 'production', 1, 'deploy');
    await reg.setAlias('mnist', 'production', 2, 'deploy');
    expect((await reg.resolveAlias('mnist'))?.version).toBe(2);
    expect(await reg.rollback('mnist', 1)).toEqual({ from: 2, to: 1 });
    expect((await reg.resolveAlias('mnist'))?.version).toBe(1);
    expect((await reg.aliasHistory('mnist')).map((e) => [e.version, e.previousVersion, e.reason])).toEqual([
      [1, null, 'deploy'],
      [2, 1, 'deploy'],
      [1, 2, 'rollback'],
    ]);
    expect(await reg.aliases('mnist')).toMatchObject([{ alias: 'production', version: 1 }]);
  });

  it('refuses unknown versions, unknown models, forward rollbacks and bad names', async () => {
    await expect(reg.setAlias('mnist', 'production', 99)).rejects.toMatchObject({ code: 'VERSION_NOT_FOUND' });
    await expect(reg.setAlias('nope', 'production', 1)).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
    await expect(reg.rollback('mnist', 2)).rejects.toMatchObject({ code: 'BAD_ROLLBACK' });
    await expect(reg.rollback('fashion', 1)).rejects.toMatchObject({ code: 'ALIAS_NOT_SET' });
    await expect(reg.register(input({ model: '../etc' }))).rejects.toMatchObject({ code: 'BAD_MODEL_NAME' });
  });

  it('a model name is owned by the pipeline that registered it first; input specs round-trip', async () => {
    const spec = { shape: [2, 2], dtype: 'float32' as const, range: [0, 1] as [number, number], describe: 'normalised pixels', raw: { kind: 'scale' as const, scale: 1 / 255, rawRange: [0, 255] as [number, number], describe: 'raw 0–255 pixels' } };
    const first = await reg.register(input({ model: 'owned', runId: 'o1', inputSpec: spec, owner: { pipeline: 'alpha' } }));
    expect(first.version.inputSpec).toEqual(spec);
    expect((await reg.getVersion('owned', 1))?.inputSpec).toEqual(spec);
    expect((await reg.resolveAlias('owned'))).toBeUndefined();
    expect(await reg.owner('owned')).toMatchObject({ model: 'owned', pipeline: 'alpha', runId: 'o1' });
    await expect(reg.register(input({ model: 'owned', runId: 'o2', owner: { pipeline: 'beta' } }))).rejects.toMatchObject({
      code: 'MODEL_NAME_TAKEN',
      message: 'model name owned belongs to pipeline alpha (first registered by run o1); pipeline beta deploying to it needs a run started with an admin token',
    });
    const admin = await reg.register(input({ model: 'owned', runId: 'o2', owner: { pipeline: 'beta', override: true } }));
    expect(admin.version.version).toBe(2);
    expect(admin.version.inputSpec).toBeUndefined();
    expect((await reg.getVersion('owned', 2))?.inputSpec).toBeUndefined();
    expect((await reg.owner('owned'))?.pipeline).toBe('alpha');
    expect(await reg.owner('mnist')).toBeUndefined();
  });

  it('migration 0002 gives existing names the pipeline of their first version as owner', async () => {
    await db.run('DROP TABLE IF EXISTS model_versions, model_aliases, model_alias_events, model_owners'.replace(/, /g, kind === 'sqlite' ? '; DROP TABLE IF EXISTS ' : ', '));
    await db.run("DELETE FROM schema_migrations WHERE id LIKE 'registry/%'");
    expect(await migrate(db, registryMigrations.slice(0, 1))).toEqual(['registry/0001-init']);
    const row = (model: string, version: number, runId: string, metrics: string) =>
      db.run('INSERT INTO model_versions (model, version, run_id, stage_id, artifact_uri, sha256, bytes, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', [model, version, runId, 'deploy', 'artifact:x', 'aa', 1, metrics, `2024-01-0${version}T00:00:00.000Z`]);
    await row('old', 1, 'pipeline/first/aaaaa', JSON.stringify({ pipeline: 'first', testAccuracy: 0.9 }));
    await row('old', 2, 'pipeline/second/bbbbb', JSON.stringify({ pipeline: 'second' }));
    await row('anon', 1, 'r', JSON.stringify({ testAccuracy: 0.5 }));
    expect(await migrate(db, registryMigrations)).toEqual(['registry/0002-owners-input-spec', 'registry/0003-model-format']);
    expect(await reg.owner('old')).toEqual({ model: 'old', pipeline: 'first', runId: 'pipeline/first/aaaaa', claimedAt: '2024-01-01T00:00:00.000Z' });
    expect(await reg.owner('anon')).toBeUndefined();
    expect((await reg.getVersion('old', 1))?.inputSpec).toBeUndefined();
    // Migration 0003: versions from before formats were recorded are tfjs layers folders.
    expect((await reg.getVersion('old', 2))?.format).toBe('tfjs-layers');
    // A name with no recorded owner is claimed by its next deploy.
    await reg.register(input({ model: 'anon', runId: 'r2', owner: { pipeline: 'claimer' } }));
    expect((await reg.owner('anon'))?.pipeline).toBe('claimer');
  });
});
