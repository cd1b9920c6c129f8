import { mkdtemp, mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { allMigrations } from '../../app/runtime.js';
import { collectGarbage } from '../../engine/retention.js';
import { ArtifactStore } from '../../lib/artifacts.js';
import { migrate } from '../../lib/db/migrate.js';
import { openDb } from '../../lib/db/open.js';

const DAY = 86_400_000;

async function folder(root: string, rel: string, ageDays: number, now: number): Promise<void> {
  const dir = path.join(root, rel);
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, 'data.bin');
  await writeFile(file, Buffer.alloc(1000));
  const t = new Date(now - ageDays * DAY);
  await utimes(file, t, t);
  await utimes(dir, t, t);
}

describe('retention (npm run gc)', () => {
  it('removes old unreferenced run folders and scratch, keeps recent runs, registered models and cached outputs', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-gc-'));
    const store = new ArtifactStore(path.join(root, 'artifacts'));
    const db = await openDb({ sqlitePath: path.join(root, 'capstan.db') });
    await migrate(db, allMigrations);
    const now = Date.now();
    const a = store.root;
    await folder(a, 'runs/old-run/train/model', 60, now);
    await folder(a, 'runs/old-run/train/_checkpoints/epoch-0001', 60, now);
    await folder(a, 'runs/recent-run/train/model', 3, now);
    await folder(a, 'runs/old-cached/write/note', 60, now);
    await folder(a, 'registry/mnist/sha256-abc', 90, now);
    await folder(a, 'registry/mnist/sha256-abc.replaced-1', 2, now);
    await folder(a, 'registry/mnist/.staging-x', 2, now);
    await folder(a, 'registry/mnist/sha256-new.replaced-2', 0, now);
    await db.run(
      'INSERT INTO model_versions (model, version, run_id, stage_id, artifact_uri, sha256, bytes, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ['mnist', 1, 'old-run', 'deploy', 'artifact:registry/mnist/sha256-abc', 'abc', 1000, '{}', new Date(now - 90 * DAY).toISOString()],
    );
    await db.run('INSERT INTO stage_cache (cache_key, run_id, stage_id, result_json, created_at) VALUES (?, ?, ?, ?, ?)', [
      'k1',
      'old-cached',
      'write',
      JSON.stringify({ outputs: { note: { kind: 'note', uri: 'artifact:runs/old-cached/write/note', sha256: 'x', bytes: 1000 } }, metrics: {} }),
      new Date(now - 60 * DAY).toISOString(),
    ]);

    const dry = await collectGarbage({ artifacts: store, db, now, dryRun: true });
    expect(dry.removed.map((r) => r.path).sort()).toEqual(['registry/mnist/.staging-x', 'registry/mnist/sha256-abc.replaced-1', 'runs/old-run']);
    expect(await readdir(path.join(a, 'runs'))).toContain('old-run'); // a dry run removes nothing

    const r = await collectGarbage({ artifacts: store, db, now });
    expect(r.bytesFreed).toBe(4000);
    expect((await readdir(path.join(a, 'runs'))).sort()).toEqual(['old-cached', 'recent-run']);
    expect((await readdir(path.join(a, 'registry', 'mnist'))).sort()).toEqual(['sha256-abc', 'sha256-new.replaced-2']);
    expect(r.kept.map((k) => `${k.path}: ${k.why}`).sort()).toEqual([
      'runs/old-cached: referenced by a registered model or a stage cache entry',
      'runs/recent-run: within the retention window (resume may need it)',
    ]);
    await db.close();
  });
});
