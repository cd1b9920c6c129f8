import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { ArtifactRef } from '../artifact-ref.js';
import { ArtifactStore, SCHEME, hashTree, listFiles, type SharedFolder } from '../artifacts.js';
import { StageError } from '../errors.js';
import type { Logger } from '../logger.js';
import { ARTIFACT_UNSAFE_NAME, localPathOf } from './bucket-names.js';
import { FolderMirror } from './folder-mirror.js';
import { Objects, isNotFound } from './s3-objects.js';
import { withSpan } from '../telemetry/tracing.js';

/** `s3://bucket/prefix` split up; the prefix has no leading or trailing `/` and may be empty. */
export interface S3Location {
  bucket: string;
  prefix: string;
}

export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url.trim());
  if (!m) throw new Error(`expected s3://bucket[/prefix] (bucket: 3–63 lowercase letters, digits, '.', '-'); got "${url}"`);
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '..' || p === '.')) throw new Error(`bad S3 prefix in "${url}"`);
  return { bucket: m[1]!, prefix };
}

export interface S3StoreOptions {
  location: S3Location;
  client: S3Client;
  /** The local cache: the same layout as a local store (stages read and write here). */
  cacheDir: string;
  /** Create the bucket when it is missing (development servers; on AWS, create it yourself). */
  createBucket?: boolean;
  multipartThreshold?: number;
  partSize?: number;
  /** Pause between two passes of a shared folder's mirror (default 100 ms). */
  mirrorEveryMs?: number;
  logger?: Logger;
  /** How the endpoint is named in logs (default: AWS). */
  endpointLabel?: string;
}

/** What is written next to an artifact once all of it is uploaded: without it, an artifact does not exist. */
interface Seal {
  sha256: string;
  bytes: number;
  type: 'file' | 'dir';
  files: { name: string; size: number }[];
  sealedAt: string;
}

/**
 * Artifacts in S3-compatible object storage. The local cache has the layout of a local store,
 * so stages work on folders as before; the bucket holds the truth:
 *
 * - `<prefix>/<path>[/<file>]`: an artifact's objects (a file artifact is one object);
 * - `<prefix>/.seals/<path>.json`: its seal (SHA-256, bytes, files), written only after every
 *   object is uploaded and removed before an artifact is overwritten, so a partial upload is
 *   never visible as sealed. References stay `artifact:<path>`.
 *
 * Sealing uploads (multipart above a threshold, retried); `localPath` fetches on demand into the
 * cache and checks the SHA-256 before handing the folder out; `verify` asks the seal. Checkpoints
 * are uploaded in the background when their URI is taken; a shared folder (replica rounds) is
 * mirrored both ways while open.
 */
export class S3ArtifactStore extends ArtifactStore {
  readonly objects: Objects;
  private readonly location: S3Location;
  private readonly client: S3Client;
  private readonly logger: Logger | undefined;
  /** Local paths whose content is known to be the sealed artifact (path → sha256). */
  private readonly fresh = new Map<string, string>();
  private readonly fetching = new Map<string, Promise<string>>();
  private readonly mirrors = new Map<string, { mirror: FolderMirror; refs: number }>();
  /** Shared folders ever opened: checkpoint URIs inside them travel through the mirror, not a seal. */
  private readonly sharedRoots = new Set<string>();
  private uploads: Promise<void> = Promise.resolve();
  /**
   * Time stages spent waiting on the bucket (sealing = hash + upload; fetching = download + hash
   * check), for benchmarks and logs. Background work (checkpoint uploads, shared-folder mirrors)
   * is not in it.
   */
  readonly stats = { seals: 0, sealMs: 0, sealBytes: 0, fetches: 0, fetchMs: 0, fetchBytes: 0 };

  constructor(private readonly o: S3StoreOptions) {
    super(o.cacheDir);
    this.location = o.location;
    this.client = o.client;
    this.logger = o.logger;
    this.objects = new Objects({
      client: o.client,
      bucket: o.location.bucket,
      ...(o.multipartThreshold ? { multipartThreshold: o.multipartThreshold } : {}),
      ...(o.partSize ? { partSize: o.partSize } : {}),
    });
  }

  override describe(): string {
    const p = this.location.prefix ? `/${this.location.prefix}` : '';
    return `s3://${this.location.bucket}${p} (${this.o.endpointLabel ?? 'AWS'}; cache ${this.root})`;
  }

  override async open(): Promise<void> {
    await super.open();
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.location.bucket }));
    } catch (e) {
      if (!isNotFound(e) || !this.o.createBucket) throw new Error(`artifact bucket ${this.location.bucket}: ${(e as Error).name}: ${(e as Error).message}`);
      await this.client.send(new CreateBucketCommand({ Bucket: this.location.bucket })).catch((err: unknown) => {
        if ((err as Error).name !== 'BucketAlreadyOwnedByYou' && (err as Error).name !== 'BucketAlreadyExists') throw err;
      });
    }
  }

  override async close(): Promise<void> {
    await Promise.all([...this.mirrors.values()].map((m) => m.mirror.stop().catch(() => undefined)));
    this.mirrors.clear();
    await this.uploads;
  }

  /** The object key of a store-relative path. */
  key(rel: string): string {
    return this.location.prefix ? `${this.location.prefix}/${rel}` : rel;
  }

  private sealKey(rel: string): string {
    return this.key(`.seals/${rel}.json`);
  }

  private relOf(uri: string): string {
    this.resolve(uri); // checks the scheme and that it stays inside the store
    return uri.slice(SCHEME.length);
  }

  async readSeal(rel: string): Promise<Seal | undefined> {
    const b = await this.objects.getBytes(this.sealKey(rel));
    return b ? (JSON.parse(b.toString('utf8')) as Seal) : undefined;
  }

  /** Hashes the finished folder (or file), uploads it unless the bucket already holds exactly it, then writes its seal. */
  override seal(kind: string, absPath: string, meta?: Record<string, unknown>): Promise<ArtifactRef> {
    const uri = this.uriOf(absPath);
    return withSpan('capstan.artifact.put', { 'capstan.artifact.store': 's3', 'capstan.artifact.kind': kind, 'capstan.artifact.uri': uri }, async (span) => {
      const t0 = performance.now();
      const { sha256, bytes } = await this.upload(absPath);
      this.stats.seals++;
      this.stats.sealMs += performance.now() - t0;
      this.stats.sealBytes += bytes;
      span?.setAttribute('capstan.artifact.bytes', bytes);
      return { kind, uri, sha256, bytes, ...(meta ? { meta } : {}) };
    });
  }

  private async upload(absPath: string): Promise<{ sha256: string; bytes: number }> {
    const rel = this.relOf(this.uriOf(absPath));
    const isFile = (await stat(absPath)).isFile();
    // The seal and what is already under the path, asked at once while the folder is hashed.
    const [{ sha256, bytes }, existing, before] = await Promise.all([
      hashTree(absPath),
      this.readSeal(rel),
      isFile ? Promise.resolve([]) : this.objects.list(`${this.key(rel)}/`),
    ]);
    if (existing && existing.sha256 === sha256 && existing.bytes === bytes) {
      this.fresh.set(absPath, sha256);
      return { sha256, bytes };
    }
    // Unsealed before anything changes: a reader never takes a half-replaced artifact for the old one.
    if (existing) await this.objects.delete(this.sealKey(rel));
    const names = isFile ? [''] : await listFiles(absPath);
    const keyOf = (name: string) => (name ? `${this.key(rel)}/${name}` : this.key(rel));
    let next = 0;
    const work = async () => {
      for (;;) {
        const name = names[next++];
        if (name === undefined) return;
        await this.objects.putFile(keyOf(name), name ? path.join(absPath, name) : absPath);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.objects.parallelism, names.length) }, work));
    // Objects an earlier attempt left under the same path are not part of this artifact.
    const keep = new Set(names.map(keyOf));
    for (const obj of before) if (!keep.has(obj.key)) await this.objects.delete(obj.key);
    const files = await Promise.all(names.map(async (name) => ({ name, size: (await stat(name ? path.join(absPath, name) : absPath)).size })));
    const seal: Seal = { sha256, bytes, type: isFile ? 'file' : 'dir', files, sealedAt: new Date().toISOString() };
    await this.objects.putBytes(this.sealKey(rel), JSON.stringify(seal), 'application/json');
    this.fresh.set(absPath, sha256);
    return { sha256, bytes };
  }

  override async freshDir(dir: string): Promise<string> {
    const d = path.resolve(dir);
    for (const p of [...this.fresh.keys()]) if (p === d || p.startsWith(d + path.sep)) this.fresh.delete(p);
    return super.freshDir(dir);
  }

  override async verify(ref: ArtifactRef): Promise<{ ok: true } | { ok: false; reason: string }> {
    let seal: Seal | undefined;
    try {
      seal = await this.readSeal(this.relOf(ref.uri));
    } catch (e) {
      if (e instanceof Error && /artifact reference|not an artifact/.test(e.message)) return { ok: false, reason: e.message };
      throw e;
    }
    if (!seal) return { ok: false, reason: `artifact ${ref.uri} is missing` };
    if (seal.sha256 !== ref.sha256) return { ok: false, reason: `artifact ${ref.uri} fails its hash check` };
    return { ok: true };
  }

  /** Fetches a sealed artifact (or checkpoint) into the cache unless it is there already, and checks its SHA-256. */
  override async localPath(ref: ArtifactRef | string): Promise<string> {
    const uri = typeof ref === 'string' ? ref : ref.uri;
    const abs = this.resolve(uri);
    const want = typeof ref === 'string' ? undefined : ref.sha256;
    const known = this.fresh.get(abs);
    if (known && (want === undefined || known === want) && (await exists(abs))) return abs;
    const running = this.fetching.get(abs);
    if (running) {
      await running.catch(() => undefined);
      return this.localPath(ref);
    }
    const t0 = performance.now();
    // Only a real fetch is a span (`capstan.artifact.get`); a cache hit above is not.
    const p = withSpan('capstan.artifact.get', { 'capstan.artifact.store': 's3', 'capstan.artifact.uri': uri }, () => this.fetch(uri, abs, want));
    this.fetching.set(abs, p);
    try {
      return await p;
    } finally {
      this.fetching.delete(abs);
      this.stats.fetches++;
      this.stats.fetchMs += performance.now() - t0;
    }
  }

  private async fetch(uri: string, abs: string, want: string | undefined): Promise<string> {
    const rel = this.relOf(uri);
    const seal = await this.readSeal(rel);
    if (!seal) throw new Error(`artifact ${uri} is not in the store (never sealed, or its upload did not finish)`);
    if (want !== undefined && seal.sha256 !== want)
      throw new Error(`artifact ${uri} fails its hash check (the store holds ${seal.sha256.slice(0, 12)}…, the reference says ${want.slice(0, 12)}…)`);
    // A cache copy that hashes right is used as it is (e.g. written on this host by an earlier process).
    if ((await exists(abs)) && (await hashTree(abs)).sha256 === seal.sha256) {
      this.fresh.set(abs, seal.sha256);
      return abs;
    }
    const tmp = `${abs}.fetch-${randomBytes(4).toString('hex')}`;
    // Every name the seal lists is checked before the first byte is written: whoever may write
    // to the bucket writes the seal, and a name such as `../x` would land outside the cache.
    const files = seal.type === 'file' ? [] : sealedFiles(seal, uri).map((name) => ({ name, local: localPathOf(tmp, name, `the seal of ${uri}`) }));
    try {
      if (seal.type === 'file') await this.objects.getFile(this.key(rel), tmp);
      else {
        await mkdir(tmp, { recursive: true });
        let next = 0;
        const work = async () => {
          for (;;) {
            const f = files[next++];
            if (!f) return;
            await this.objects.getFile(`${this.key(rel)}/${f.name}`, f.local);
          }
        };
        await Promise.all(Array.from({ length: Math.min(this.objects.parallelism, files.length) }, work));
      }
      const got = await hashTree(tmp);
      this.stats.fetchBytes += got.bytes;
      if (got.sha256 !== seal.sha256)
        throw new Error(`artifact ${uri} fails its hash check after download (got ${got.sha256.slice(0, 12)}…, sealed ${seal.sha256.slice(0, 12)}…)`);
      await rm(abs, { recursive: true, force: true });
      await mkdir(path.dirname(abs), { recursive: true });
      await rename(tmp, abs);
      this.fresh.set(abs, seal.sha256);
      return abs;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  override checkpointUri(absPath: string): string {
    const uri = this.uriOf(absPath);
    const abs = path.resolve(absPath);
    for (const root of this.sharedRoots) if (abs === root || abs.startsWith(root + path.sep)) return uri;
    if (this.fresh.has(abs)) return uri;
    // Uploaded in the background, in order; a retry elsewhere that finds no seal starts afresh.
    this.uploads = this.uploads.then(
      () =>
        this.upload(abs).then(
          () => undefined,
          (e: unknown) => this.logger?.warn('could not upload a checkpoint', { uri, error: (e as Error).message }),
        ),
      () => undefined,
    );
    return uri;
  }

  /** Waits for the checkpoint uploads queued so far. */
  async flushCheckpoints(): Promise<void> {
    await this.uploads;
  }

  override async shareFolder(dir: string): Promise<SharedFolder> {
    const d = path.resolve(dir);
    await mkdir(d, { recursive: true });
    this.sharedRoots.add(d);
    let m = this.mirrors.get(d);
    if (!m) {
      const rel = this.relOf(this.uriOf(d));
      const mirror = new FolderMirror({
        objects: this.objects,
        dir: d,
        prefix: `${this.key(rel)}/`,
        everyMs: this.o.mirrorEveryMs ?? 100,
        onError: (e) =>
          e instanceof StageError && e.type === ARTIFACT_UNSAFE_NAME
            ? this.logger?.warn('shared folder: a key in the bucket was refused and is not fetched', { dir: rel, error: e.message })
            : this.logger?.warn('shared folder sync failed (retrying)', { dir: rel, error: (e as Error).message }),
      });
      m = { mirror, refs: 0 };
      this.mirrors.set(d, m);
      try {
        await mirror.pull();
      } catch (e) {
        this.mirrors.delete(d);
        throw e;
      }
      mirror.start();
    }
    m.refs++;
    const entry = m;
    let closed = false;
    return {
      dir: d,
      close: async () => {
        if (closed) return;
        closed = true;
        if (--entry.refs > 0) return;
        if (this.mirrors.get(d) === entry) this.mirrors.delete(d);
        await entry.mirror.stop();
      },
    };
  }

  override async stageBytes(runId: string, stageId: string): Promise<number> {
    const stageDir = path.dirname(this.dirFor(runId, stageId, '_'));
    const name = path.basename(stageDir);
    const runRel = this.relOf(this.uriOf(path.dirname(stageDir)));
    let bytes = 0;
    for (const obj of await this.objects.list(`${this.key(runRel)}/${name}`)) {
      const next = obj.key.slice(`${this.key(runRel)}/`.length).split('/')[0]!;
      if (next === name || next.startsWith(`${name}.replica-`)) bytes += obj.size;
    }
    return bytes;
  }
}

/** The file names of a directory seal, after checking its shape (it is read from the bucket, like everything else there). */
function sealedFiles(seal: Seal, uri: string): string[] {
  if (seal.type !== 'dir' || !Array.isArray(seal.files) || seal.files.some((f) => typeof f?.name !== 'string')) {
    throw new StageError(`the seal of ${uri} is malformed (expected type "file" or "dir" and a list of files with names)`, {
      type: ARTIFACT_UNSAFE_NAME,
      retryable: false,
    });
  }
  return seal.files.map((f) => f.name);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
