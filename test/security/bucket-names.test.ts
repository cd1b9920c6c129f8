// Issue 20: names found in the bucket never become paths outside the local cache. Whoever may
// write to the bucket (another host, a leaked key) writes the seals and the keys; the S3 store
// builds cache paths from them (the file list of a seal, the rest of a listed key of a shared
// folder). Over a real SeaweedFS: a seal naming `../…` and a listing naming `../…` are refused
// with ARTIFACT_UNSAFE_NAME and nothing is written outside the cache. SeaweedFS itself refuses
// keys with `..` segments (AWS S3 does not), so a small proxy in front of it plays the bucket
// that does: it serves any `..` key and rewrites a marker in listings into one.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Seaweed } from '../../dev/seaweed.js';
import { ARTIFACT_UNSAFE_NAME, unsafeNameProblem } from '../../lib/artifact-store/bucket-names.js';
import { S3ArtifactStore } from '../../lib/artifact-store/s3-store.js';
import { StageError } from '../../lib/errors.js';
import { startTestSeaweed } from '../helpers/seaweed.js';
import { waitFor } from '../helpers/stack.js';

const MARK = 'HOSTILE-NAME-MARK';
const PWNED = 'written-by-the-bucket';

let weed: Seaweed;
let proxy: http.Server;
let proxyEndpoint: string;
/** What the proxy puts in a listing in place of MARK. */
let listedName = '';
let tmp: string;
let outside: string;
const stores: S3ArtifactStore[] = [];

beforeAll(async () => {
  weed = await startTestSeaweed();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-bucket-names-'));
  outside = path.join(tmp, 'outside');
  await mkdir(outside);
  proxy = await startHostileProxy(new URL(weed.endpoint));
  proxyEndpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of stores) await s.close();
  await new Promise((r) => proxy?.close(r));
  await weed?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/**
 * An S3 endpoint that forwards to SeaweedFS, except: a request whose path has a `..` segment is
 * answered with PWNED (a bucket that stores such keys), and MARK in a listing becomes `listedName`.
 */
function startHostileProxy(target: URL): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url && /(^|\/)\.\.(\/|\?|$)/.test(req.url.split('?')[0]!)) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(PWNED.length) });
      res.end(PWNED);
      return;
    }
    const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      const isList = req.method === 'GET' && /[?&]list-type=2/.test(req.url ?? '');
      if (!isList) {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      ur.on('data', (c: Buffer) => chunks.push(c));
      ur.on('end', () => {
        const body = Buffer.from(Buffer.concat(chunks).toString('utf8').split(MARK).join(listedName));
        res.writeHead(ur.statusCode ?? 502, { ...ur.headers, 'content-length': String(body.length) });
        res.end(body);
      });
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function store(endpoint: string, bucket: string, o: { onWarn?: (msg: string, fields?: Record<string, unknown>) => void } = {}): Promise<S3ArtifactStore> {
  const client = new S3Client({
    endpoint,
    region: weed.region,
    forcePathStyle: true,
    credentials: { accessKeyId: weed.accessKeyId, secretAccessKey: weed.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const cacheDir = await mkdtemp(path.join(tmp, 'cache-'));
  const warn = o.onWarn ?? (() => undefined);
  const logger = { debug: () => undefined, info: () => undefined, warn, error: warn };
  const s = new S3ArtifactStore({ location: { bucket, prefix: 'team' }, client, cacheDir, createBucket: true, mirrorEveryMs: 50, logger });
  await s.open();
  stores.push(s);
  return s;
}

/** Every file and folder under `dir`, recursively (relative names). */
async function tree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(rel);
    if (e.isDirectory()) out.push(...(await tree(path.join(dir, e.name), rel)));
  }
  return out;
}

async function refusal(p: Promise<unknown>): Promise<StageError> {
  const e = await p.then(
    () => {
      throw new Error('not refused');
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(StageError);
  return e as StageError;
}

describe('names from the bucket become local paths only when they are safe relative names', () => {
  it('refuses "..", absolute paths, backslashes, NUL and empty segments; accepts nested relative names', () => {
    for (const ok of ['model.json', 'shards/x.bin', 'round-00001/replica-0.bin', '..hidden', 'a..b/c']) expect(unsafeNameProblem(ok), ok).toBeUndefined();
    expect(unsafeNameProblem('../escape')).toBe('it has a ".." segment');
    expect(unsafeNameProblem('a/../../b')).toBe('it has a ".." segment');
    expect(unsafeNameProblem('..')).toBe('it has a ".." segment');
    expect(unsafeNameProblem('/etc/cron.d/x')).toBe('it is an absolute path');
    expect(unsafeNameProblem('a\\..\\b')).toBe('it contains a backslash');
    expect(unsafeNameProblem('a\0b')).toBe('it contains a NUL character');
    expect(unsafeNameProblem('a//b')).toBe('it has an empty segment ("//" or a trailing "/")');
    expect(unsafeNameProblem('a/')).toBe('it has an empty segment ("//" or a trailing "/")');
    expect(unsafeNameProblem('./a')).toBe('it has a "." segment');
    expect(unsafeNameProblem('')).toBe('it is empty');
  });

  it('a seal listing "../…" is refused before any file is written; nothing appears outside the cache (real SeaweedFS)', async () => {
    const bucket = `names-seal-${randomBytes(3).toString('hex')}`;
    const writer = await store(weed.endpoint, bucket);
    const ref = await writer.writeOutput({ runId: 'r1', stageId: 'data', kind: 'dataset' }, async (dir) => {
      await writeFile(path.join(dir, 'manifest.json'), '{"n":1}');
      return {};
    });
    const reader = await store(proxyEndpoint, bucket);
    const abs = reader.resolve(ref.uri);
    const target = path.join(outside, 'made-by-seal', 'pwned.txt');
    const hostile = path.relative(abs, target);
    expect(hostile.startsWith('../')).toBe(true);
    // Whoever writes to the bucket rewrites the seal: same hash, one more file, named to escape.
    const sealKey = writer.key(`.seals/${ref.uri.slice('artifact:'.length)}.json`);
    const seal = JSON.parse((await writer.objects.getBytes(sealKey))!.toString('utf8')) as { files: { name: string; size: number }[] };
    for (const name of [hostile, target, 'ok/../../x', 'a//b']) {
      await writer.objects.putBytes(sealKey, JSON.stringify({ ...seal, files: [...seal.files, { name, size: PWNED.length }] }), 'application/json');
      const e = await refusal(reader.localPath(ref));
      expect(e.type, name).toBe(ARTIFACT_UNSAFE_NAME);
      expect(e.retryable).toBe(false);
      expect(e.message).toContain(`the seal of ${ref.uri} names the file ${JSON.stringify(name)}, which is refused: it `);
    }
    expect(await tree(outside)).toEqual([]);
    // Nothing of the refused fetch is left in the cache either (no temporary folder).
    expect((await tree(reader.root)).filter((f) => f.includes('.fetch-'))).toEqual([]);
    // The untouched seal still fetches.
    await writer.objects.putBytes(sealKey, JSON.stringify(seal), 'application/json');
    expect(await tree(await reader.localPath(ref))).toEqual(['manifest.json']);
  });

  it('a shared folder listing a key with "../…" skips it (reported once) and keeps mirroring the other files (real SeaweedFS)', async () => {
    const bucket = `names-list-${randomBytes(3).toString('hex')}`;
    const writer = await store(weed.endpoint, bucket);
    const warnings: string[] = [];
    const reader = await store(proxyEndpoint, bucket, { onWarn: (msg, fields) => warnings.push(`${msg} ${JSON.stringify(fields)}`) });
    const dir = reader.checkpointDir('r2', 'fit');
    const target = path.join(outside, 'made-by-listing', 'pwned.bin');
    listedName = path.relative(dir, target);
    expect(listedName.startsWith('../')).toBe(true);
    const prefix = writer.key(`${reader.uriOf(dir).slice('artifact:'.length)}/`);
    await writer.objects.putBytes(`${prefix}${MARK}`, 'x');
    await writer.objects.putBytes(`${prefix}round-00001/replica-0.bin`, 'fine');
    const shared = await reader.shareFolder(dir);
    try {
      await waitFor(
        async () => ((await stat(path.join(shared.dir, 'round-00001', 'replica-0.bin')).catch(() => undefined)) ? true : undefined),
        'the safe file to be mirrored',
      );
      await writer.objects.putBytes(`${prefix}round-00002/replica-0.bin`, 'later');
      await waitFor(
        async () => ((await stat(path.join(shared.dir, 'round-00002', 'replica-0.bin')).catch(() => undefined)) ? true : undefined),
        'a later file to be mirrored',
      );
    } finally {
      await shared.close();
    }
    expect(await tree(outside)).toEqual([]);
    const refused = warnings.filter((w) => w.includes('a key in the bucket was refused'));
    expect(refused).toHaveLength(1);
    expect(refused[0]).toContain(JSON.stringify(`names the file ${JSON.stringify(listedName)}, which is refused: it has a ".." segment`).slice(1, -1));
  });
});
