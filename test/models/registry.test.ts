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
    expect(got).toMatchObject({
      model: 'mnist',
      version: 1,
      runId: 'run-a',
      stageId: 'deploy',
      sha256: 'aa',
      bytes: 1234,
      metrics: { testAccuracy: 0.91, tfBackend: 'wasm' },
    });
    expect((await reg.listVersions('mnist')).map((v) => v.version)).toEqual([2, 1]);
    expect(await reg.listModels()).toEqual(['fashion', 'mnist']);
  });

  it("records each version's format: tfjs-layers unless the version says onnx", async () => {
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

  it('a model name is owned by the token that registered it first, not by a pipeline name; input specs round-trip', async () => {
    const spec = {
      shape: [2, 2],
      dtype: 'float32' as const,
      range: [0, 1] as [number, number],
      describe: 'normalised pixels',
      raw: { kind: 'scale' as const, scale: 1 / 255, rawRange: [0, 255] as [number, number], describe: 'raw 0–255 pixels' },
    };
    const first = await reg.register(
      input({ model: 'owned', runId: 'o1', inputSpec: spec, owner: { pipeline: 'alpha', tokenId: 'aaaaaaaaaaaa', name: 'alice' } }),
    );
    expect(first.version.inputSpec).toEqual(spec);
    expect((await reg.getVersion('owned', 1))?.inputSpec).toEqual(spec);
    expect(await reg.resolveAlias('owned')).toBeUndefined();
    expect(await reg.owner('owned')).toMatchObject({ model: 'owned', tokenId: 'aaaaaaaaaaaa', name: 'alice', pipeline: 'alpha', runId: 'o1', grantedBy: null });
    // The same pipeline name from another token is refused: the name proves nothing.
    await expect(
      reg.register(input({ model: 'owned', runId: 'o2', owner: { pipeline: 'alpha', tokenId: 'bbbbbbbbbbbb', name: 'bob' } })),
    ).rejects.toMatchObject({
      code: 'MODEL_NAME_TAKEN',
      message: "model name owned belongs to another token; registering versions of it or moving its aliases needs the owning token or an admin's",
    });
    await expect(reg.register(input({ model: 'owned', runId: 'o2', owner: { pipeline: 'alpha' } }))).rejects.toMatchObject({ code: 'MODEL_NAME_TAKEN' });
    const own = await reg.register(input({ model: 'owned', runId: 'o2', owner: { pipeline: 'other', tokenId: 'aaaaaaaaaaaa', name: 'alice' } }));
    expect(own.version.version).toBe(2);
    const admin = await reg.register(input({ model: 'owned', runId: 'o3', owner: { pipeline: 'beta', tokenId: 'cccccccccccc', admin: true } }));
    expect(admin.version.version).toBe(3);
    expect(admin.version.inputSpec).toBeUndefined();
    expect((await reg.getVersion('owned', 3))?.inputSpec).toBeUndefined();
    expect((await reg.owner('owned'))?.tokenId).toBe('aaaaaaaaaaaa');
    expect(await reg.owner('mnist')).toBeUndefined();
    expect(await reg.mayWrite('owned', { tokenId: 'aaaaaaaaaaaa' })).toBe(true);
    expect(await reg.mayWrite('owned', { tokenId: 'bbbbbbbbbbbb' })).toBe(false);
    expect(await reg.mayWrite('owned', { admin: true })).toBe(true);
    expect(await reg.mayWrite('never-registered', { tokenId: 'bbbbbbbbbbbb' })).toBe(true);
  });

  it('setAlias with expectPrevious refuses when the alias moved meanwhile (ALIAS_MOVED), and allows a repeat of the same move', async () => {
    for (const runId of ['cas1', 'cas2', 'cas3']) await reg.register(input({ model: 'cas', runId }));
    await expect(reg.setAlias('cas', 'production', 1, 'deploy', { expectPrevious: 2 })).rejects.toMatchObject({ code: 'ALIAS_MOVED' });
    expect((await reg.setAlias('cas', 'production', 1, 'deploy', { expectPrevious: null })).previousVersion).toBeNull();
    await expect(reg.setAlias('cas', 'production', 3, 'deploy', { expectPrevious: null })).rejects.toMatchObject({
      code: 'ALIAS_MOVED',
      message: 'production of cas moved to version 1 while version 3 was compared with no version',
    });
    expect((await reg.setAlias('cas', 'production', 3, 'deploy', { expectPrevious: 1 })).previousVersion).toBe(1);
    expect((await reg.setAlias('cas', 'production', 3, 'deploy', { expectPrevious: 1 })).previousVersion).toBe(3);
    expect((await reg.resolveAlias('cas'))?.version).toBe(3);
  });

  it('an admin grants or transfers a name to a token; promotion policies default to champion/challenger and record who changed them', async () => {
    const granted = await reg.setOwner('owned', { tokenId: 'bbbbbbbbbbbb', name: 'bob' }, 'root');
    expect(granted).toMatchObject({ model: 'owned', tokenId: 'bbbbbbbbbbbb', name: 'bob', grantedBy: 'root' });
    expect(await reg.mayWrite('owned', { tokenId: 'aaaaaaaaaaaa' })).toBe(false);
    expect(await reg.mayWrite('owned', { tokenId: 'bbbbbbbbbbbb' })).toBe(true);
    // A reservation: a name nobody registered yet.
    await reg.setOwner('reserved', { tokenId: 'bbbbbbbbbbbb', name: 'bob' }, 'root');
    await expect(reg.register(input({ model: 'reserved', runId: 'z1', owner: { pipeline: 'p', tokenId: 'aaaaaaaaaaaa' } }))).rejects.toMatchObject({
      code: 'MODEL_NAME_TAKEN',
    });
    expect((await reg.register(input({ model: 'reserved', runId: 'z1', owner: { pipeline: 'p', tokenId: 'bbbbbbbbbbbb' } }))).version.version).toBe(1);

    expect(await reg.promotionPolicy('owned')).toEqual({ model: 'owned', requireChampionChallenger: true, maxTolerance: 0.02, setBy: null, setAt: null });
    expect(await reg.setPromotionPolicy('owned', { requireChampionChallenger: false }, 'root')).toMatchObject({
      requireChampionChallenger: false,
      maxTolerance: 0.02,
      setBy: 'root',
    });
    expect(await reg.setPromotionPolicy('owned', { requireChampionChallenger: true, maxTolerance: 0.005 }, 'ops')).toMatchObject({
      requireChampionChallenger: true,
      maxTolerance: 0.005,
      setBy: 'ops',
    });
    await expect(reg.setPromotionPolicy('owned', { requireChampionChallenger: true, maxTolerance: 2 }, 'ops')).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
  });

  it('migrations 0002 and 0004: existing names keep their pipeline but no token, so only admins may write to them until one grants them', async () => {
    await db.run(
      'DROP TABLE IF EXISTS model_versions, model_aliases, model_alias_events, model_owners, model_policies'.replace(
        /, /g,
        kind === 'sqlite' ? '; DROP TABLE IF EXISTS ' : ', ',
      ),
    );
    await db.run("DELETE FROM schema_migrations WHERE id LIKE 'registry/%'");
    expect(await migrate(db, registryMigrations.slice(0, 1))).toEqual(['registry/0001-init']);
    const row = (model: string, version: number, runId: string, metrics: string) =>
      db.run(
        'INSERT INTO model_versions (model, version, run_id, stage_id, artifact_uri, sha256, bytes, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [model, version, runId, 'deploy', 'artifact:x', 'aa', 1, metrics, `2024-01-0${version}T00:00:00.000Z`],
      );
    await row('old', 1, 'pipeline/first/aaaaa', JSON.stringify({ pipeline: 'first', testAccuracy: 0.9 }));
    await row('old', 2, 'pipeline/second/bbbbb', JSON.stringify({ pipeline: 'second' }));
    await row('anon', 1, 'r', JSON.stringify({ testAccuracy: 0.5 }));
    expect(await migrate(db, registryMigrations)).toEqual([
      'registry/0002-owners-input-spec',
      'registry/0003-model-format',
      'registry/0004-principal-owners-policies',
    ]);
    expect(await reg.owner('old')).toEqual({
      model: 'old',
      tokenId: null,
      name: null,
      pipeline: 'first',
      runId: 'pipeline/first/aaaaa',
      claimedAt: '2024-01-01T00:00:00.000Z',
      grantedBy: null,
    });
    expect(await reg.owner('anon')).toBeUndefined();
    expect((await reg.getVersion('old', 1))?.inputSpec).toBeUndefined();
    // Migration 0003: versions from before formats were recorded are tfjs layers folders.
    expect((await reg.getVersion('old', 2))?.format).toBe('tfjs-layers');
    // Neither the pipeline of record nor a newcomer may write to them; an admin may.
    for (const model of ['old', 'anon']) {
      await expect(reg.register(input({ model, runId: 'r2', owner: { pipeline: 'first', tokenId: 'aaaaaaaaaaaa' } }))).rejects.toMatchObject({
        code: 'MODEL_NAME_TAKEN',
      });
      expect(await reg.mayWrite(model, { tokenId: 'aaaaaaaaaaaa' })).toBe(false);
      expect(await reg.mayWrite(model, { admin: true })).toBe(true);
    }
    expect((await reg.register(input({ model: 'anon', runId: 'r3', owner: { pipeline: 'p', tokenId: 'cccccccccccc', admin: true } }))).version.version).toBe(2);
    expect(await reg.owner('anon')).toBeUndefined();
    await reg.setOwner('old', { tokenId: 'aaaaaaaaaaaa', name: 'alice' }, 'root');
    expect(await reg.mayWrite('old', { tokenId: 'aaaaaaaaaaaa' })).toBe(true);
  });
});
