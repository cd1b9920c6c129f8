import { mkdtemp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Seaweed } from '../../dev/seaweed.js';
import { S3ArtifactStore } from '../../lib/artifact-store/s3-store.js';
import { ArtifactStore, hashTree } from '../../lib/artifacts.js';
import { startTestSeaweed } from '../helpers/seaweed.js';

describe('artifact store publishing', () => {
  it('never deletes the destination: a folder already there is renamed aside, then replaced in one rename', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-publish-'));
    const store = new ArtifactStore(root);
    const dest = path.join(root, 'registry', 'm', 'sha256-x');
    await mkdir(dest, { recursive: true });
    await writeFile(path.join(dest, 'model.json'), 'old');
    // A reader that opened the old folder's file keeps reading it after the swap.
    const reader = await import('node:fs/promises').then((fs) => fs.open(path.join(dest, 'model.json')));
    const src = path.join(root, 'registry', 'm', '.staging-1');
    await mkdir(src, { recursive: true });
    await writeFile(path.join(src, 'model.json'), 'new');
    await store.publish(src, dest);
    expect(await readFile(path.join(dest, 'model.json'), 'utf8')).toBe('new');
    expect((await reader.readFile()).toString()).toBe('old');
    await reader.close();
    const aside = (await readdir(path.dirname(dest))).filter((f) => f.startsWith('sha256-x.replaced-'));
    expect(aside).toHaveLength(1);
    expect(await readFile(path.join(path.dirname(dest), aside[0]!, 'model.json'), 'utf8')).toBe('old');
  });

  it('content-addressed writes store identical content once and leave an existing folder untouched', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-cas-'));
    const store = new ArtifactStore(root);
    const write = (text: string) => (dir: string) => writeFile(path.join(dir, 'a.txt'), text);
    const a = await store.writeContentAddressed({ kind: 'model', namespace: 'registry/m', stagingKey: 'one' }, write('same'));
    const b = await store.writeContentAddressed({ kind: 'model', namespace: 'registry/m', stagingKey: 'two' }, write('same'));
    expect(b.uri).toBe(a.uri);
    expect((await readdir(path.join(root, 'registry', 'm'))).filter((f) => !f.startsWith('.'))).toHaveLength(1);
  });
});

// The store contract, run against both implementations: the local folder, and S3 on a real
// SeaweedFS server. "Host B" is a second store over the same storage with a cache folder of its
// own (for the folder store: the same folder, as hosts that mount it see it).
describe.each(['local', 'seaweedfs'] as const)('artifact store contract: %s', (impl) => {
  let weed: Seaweed | undefined;
  let bucket = 0;
  const stores: ArtifactStore[] = [];
  beforeAll(async () => {
    if (impl === 'seaweedfs') weed = await startTestSeaweed();
  });
  afterAll(async () => {
    for (const s of stores) await s.close();
    await weed?.stop();
  });

  /** Two hosts over one storage (a fresh bucket, or a fresh folder). */
  async function hosts(
    o: { multipartThreshold?: number; partSize?: number } = {},
  ): Promise<{ a: ArtifactStore; b: ArtifactStore; more: () => Promise<ArtifactStore> }> {
    if (impl === 'local') {
      const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-contract-'));
      return { a: new ArtifactStore(root), b: new ArtifactStore(root), more: async () => new ArtifactStore(root) };
    }
    const location = { bucket: `contract-${process.pid}-${++bucket}`, prefix: 'team/capstan' };
    const make = async () => {
      const client = new S3Client({
        endpoint: weed!.endpoint,
        region: weed!.region,
        forcePathStyle: true,
        credentials: { accessKeyId: weed!.accessKeyId, secretAccessKey: weed!.secretAccessKey },
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'capstan-cache-'));
      const s = new S3ArtifactStore({ location, client, cacheDir, createBucket: true, mirrorEveryMs: 50, ...o });
      await s.open();
      stores.push(s);
      return s;
    };
    return { a: await make(), b: await make(), more: make };
  }

  const files = (content: Record<string, string | Buffer>) => async (dir: string) => {
    for (const [name, body] of Object.entries(content)) {
      await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await writeFile(path.join(dir, name), body);
    }
    return { files: Object.keys(content).length };
  };

  it('put, verify, get on another host: same bytes, same hash', async () => {
    const { a, b } = await hosts();
    const ref = await a.writeOutput(
      { runId: 'pipeline/x/1', stageId: 'data', kind: 'dataset' },
      files({ 'manifest.json': '{"n":1}', 'shards/x.bin': Buffer.alloc(4096, 7) }),
    );
    expect(ref.uri).toBe('artifact:runs/pipeline_x_1/data/dataset');
    expect(ref.bytes).toBe(7 + 4096);
    expect(ref.meta).toEqual({ files: 2 });
    expect(await b.verify(ref)).toEqual({ ok: true });
    const dir = await b.localPath(ref);
    expect(await readFile(path.join(dir, 'manifest.json'), 'utf8')).toBe('{"n":1}');
    expect((await hashTree(dir)).sha256).toBe(ref.sha256);
    // A reference to nothing, or with another hash, does not verify.
    expect((await b.verify({ ...ref, uri: 'artifact:runs/nope/x/y' })).ok).toBe(false);
    expect(await b.verify({ ...ref, sha256: '0'.repeat(64) })).toEqual({ ok: false, reason: `artifact ${ref.uri} fails its hash check` });
  });

  it('an output whose writer fails yields no reference, and a retry replaces it whole', async () => {
    const { a, b } = await hosts();
    const key = { runId: 'r', stageId: 's', kind: 'model' };
    await expect(
      a.writeOutput(key, async (dir) => {
        await writeFile(path.join(dir, 'half.bin'), 'x');
        throw new Error('crashed mid-write');
      }),
    ).rejects.toThrow('crashed mid-write');
    const ref = await a.writeOutput(key, files({ 'model.json': '{}' }));
    const dir = await b.localPath(ref);
    expect((await readdir(dir)).sort()).toEqual(['model.json']);
  });

  it('content-addressed exports from two hosts share one reference', async () => {
    const { a, b } = await hosts();
    const x = await a.writeContentAddressed({ kind: 'model', namespace: 'registry/m', stagingKey: 'a' }, files({ 'model.json': 'same' }));
    const y = await b.writeContentAddressed({ kind: 'model', namespace: 'registry/m', stagingKey: 'b' }, files({ 'model.json': 'same' }));
    expect(y).toEqual(x);
    expect(await readFile(path.join(await b.localPath(x), 'model.json'), 'utf8')).toBe('same');
  });

  it('a checkpoint handed out as a URI can be read on another host', async () => {
    const { a, b } = await hosts();
    const dir = path.join(await a.ensureDir(a.checkpointDir('r', 'train')), 'epoch-0001');
    await files({ 'model.json': '{"epoch":1}' })(dir);
    const uri = a.checkpointUri(dir);
    expect(uri).toBe('artifact:runs/r/train/_checkpoints/epoch-0001');
    if (a instanceof S3ArtifactStore) await a.flushCheckpoints();
    expect(await readFile(path.join(await b.localPath(uri), 'model.json'), 'utf8')).toBe('{"epoch":1}');
  });

  it('a shared folder carries files between hosts, and removals too', async () => {
    const { a, b, more } = await hosts();
    const dir = (s: ArtifactStore) => s.checkpointDir('r', 'fit');
    const fa = await a.shareFolder(dir(a));
    const fb = await b.shareFolder(dir(b));
    try {
      // Written as the replicas write: aside, then renamed.
      await mkdir(path.join(fa.dir, 'round-00001'), { recursive: true });
      await writeFile(path.join(fa.dir, 'round-00001', 'replica-0.bin.1.tmp'), Buffer.alloc(1000, 1));
      await rename(path.join(fa.dir, 'round-00001', 'replica-0.bin.1.tmp'), path.join(fa.dir, 'round-00001', 'replica-0.bin'));
      const seen = path.join(fb.dir, 'round-00001', 'replica-0.bin');
      await until(() => exists(seen));
      expect((await readFile(seen)).equals(Buffer.alloc(1000, 1))).toBe(true);
      await writeFile(path.join(fb.dir, 'round-00001', 'replica-1.bin'), Buffer.alloc(10, 2));
      await until(() => exists(path.join(fa.dir, 'round-00001', 'replica-1.bin')));
      // The writer cleans up an old round file while the folder is open.
      await rm(path.join(fa.dir, 'round-00001', 'replica-0.bin'));
    } finally {
      await fa.close();
      await fb.close();
    }
    // A host that opens the folder later (a retried replica) starts with what is there; files removed by their writer are gone.
    const c = await more();
    const fc = await c.shareFolder(dir(c));
    await fc.close();
    expect(await readdir(path.join(fc.dir, 'round-00001'))).toEqual(['replica-1.bin']);
  });

  it('counts the bytes a stage keeps, replicas included', async () => {
    const { a } = await hosts();
    await a.writeOutput({ runId: 'r', stageId: 'fit', kind: 'model', replica: 0 }, files({ 'w.bin': Buffer.alloc(100) }));
    await a.writeOutput({ runId: 'r', stageId: 'fit', kind: 'model' }, files({ 'w.bin': Buffer.alloc(50) }));
    await a.writeOutput({ runId: 'r', stageId: 'fitter', kind: 'model' }, files({ 'w.bin': Buffer.alloc(7) }));
    expect(await a.stageBytes('r', 'fit')).toBe(150);
  });

  if (impl === 'seaweedfs') {
    it('a partially uploaded output is never visible as sealed', async () => {
      const { a, b } = await hosts();
      const s = a as S3ArtifactStore;
      const key = { runId: 'r', stageId: 's', kind: 'dataset' };
      const old = await s.writeOutput(key, files({ 'a.bin': 'old a', 'b.bin': 'old b' }));
      // The storage fails after the first object of the new version went up (the worker died, the network broke).
      const put = s.objects.putFile.bind(s.objects);
      let n = 0;
      s.objects.putFile = async (k, f) => {
        if (++n > 1) throw new Error('connection reset');
        return put(k, f);
      };
      await expect(s.writeOutput(key, files({ 'a.bin': 'new a', 'b.bin': 'new b' }))).rejects.toThrow('connection reset');
      s.objects.putFile = put;
      // Neither the old artifact nor the half-written new one is offered.
      expect(await b.verify(old)).toEqual({ ok: false, reason: `artifact ${old.uri} is missing` });
      await expect(b.localPath(old)).rejects.toThrow(/not in the store/);
    });

    it('checks the hash on fetch: bytes changed in the bucket are refused', async () => {
      const { a, b } = await hosts();
      const s = a as S3ArtifactStore;
      const ref = await s.writeOutput({ runId: 'r', stageId: 's', kind: 'model' }, files({ 'weights.bin': Buffer.alloc(2048, 3) }));
      await s.objects.putBytes(`${s.key('runs/r/s/model')}/weights.bin`, Buffer.alloc(2048, 4));
      await expect(b.localPath(ref)).rejects.toThrow(/fails its hash check after download/);
      // Nothing half-fetched is left in the cache.
      expect(await exists(b.resolve(ref))).toBe(false);
    });

    it('uploads large files in parts and fetches them whole', async () => {
      const { a, b } = await hosts({ multipartThreshold: 6 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
      const big = Buffer.alloc(12 * 1024 * 1024 + 123);
      for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
      const s = a as S3ArtifactStore;
      const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'capstan-big-')), 'big.bin');
      await writeFile(file, big);
      expect(await s.objects.putFile('probe/big.bin', file)).toBe(3);
      const ref = await a.writeOutput({ runId: 'r', stageId: 'data', kind: 'dataset' }, async (dir) => writeFile(path.join(dir, 'big.bin'), big));
      expect(ref.bytes).toBe(big.length);
      const got = await readFile(path.join(await b.localPath(ref), 'big.bin'));
      expect(got.equals(big)).toBe(true);
    });
  }
});

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Waits until `cond` holds (the test's own timeout bounds it). */
async function until(cond: () => Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
}
