import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, rm, stat, rename } from 'node:fs/promises';
import path from 'node:path';
import type { ArtifactRef } from './artifact-ref.js';
import { withSpan } from './telemetry/tracing.js';

export const SCHEME = 'artifact:';

/** A folder kept in step between hosts while it is open (the replicas' round folder); see `shareFolder`. */
export interface SharedFolder {
  dir: string;
  /** Pushes what is left and stops keeping the folder in step. */
  close(): Promise<void>;
}

/**
 * The artifact store: one interface, two implementations. This class is the local folder (the
 * embedded default): artifacts are folders addressed by `artifact:<relative path>`, so a store
 * mounted at another path on another host resolves the same references. `S3ArtifactStore`
 * (lib/artifact-store/) extends it: the same layout is its local cache, and sealing uploads,
 * `localPath` fetches (hash-checked), `verify` asks the bucket.
 *
 * What callers may rely on, for both: `writeOutput` / `writeContentAddressed` return a reference
 * only once the artifact is complete and sealed; `localPath` gives a local folder of a sealed
 * artifact; `verify` says whether the sealed artifact is present and unchanged; `resolve` only
 * maps a reference to its local path (no fetch).
 */
export class ArtifactStore {
  constructor(readonly root: string) {}

  /** Where artifacts live, for logs and banners. */
  describe(): string {
    return `folder ${this.root}`;
  }

  /** Checks the store is usable (a remote store checks or creates its bucket). */
  async open(): Promise<void> {
    await mkdir(this.root, { recursive: true });
  }

  /** Finishes pending uploads and stops background work. */
  async close(): Promise<void> {}

  /**
   * A local folder (or file) holding a sealed artifact or a checkpoint URI. Here: the path
   * itself. A remote store fetches it into its cache first and checks it against its hash.
   */
  async localPath(ref: ArtifactRef | string): Promise<string> {
    return this.resolve(ref);
  }

  /**
   * The `artifact:` URI of a checkpoint a stage just wrote (what goes into heartbeat details).
   * A remote store also uploads it in the background, so a retry on another host can fetch it.
   */
  checkpointUri(absPath: string): string {
    return this.uriOf(absPath);
  }

  /**
   * Opens a folder that several attempts — possibly on several hosts — read and write at once
   * (the replicas' round folder). Here the folder is simply shared on disk. A remote store
   * fetches what is already there, then keeps the folder in step with the bucket until closed.
   */
  async shareFolder(dir: string): Promise<SharedFolder> {
    await mkdir(dir, { recursive: true });
    return { dir, close: async () => undefined };
  }

  /**
   * Bytes kept for one stage of a run: every file under the stage's folders in the run
   * (outputs, checkpoints, round folders) — the stage's own and each replica's.
   */
  async stageBytes(runId: string, stageId: string): Promise<number> {
    const stageDir = path.dirname(this.dirFor(runId, stageId, '_'));
    const runDir = path.dirname(stageDir);
    const name = path.basename(stageDir);
    let entries: string[] = [];
    try {
      entries = await readdir(runDir);
    } catch {
      entries = [];
    }
    let bytes = 0;
    for (const e of entries) if (e === name || e.startsWith(`${name}.replica-`)) bytes += await treeBytes(path.join(runDir, e));
    return bytes;
  }

  /** Whether `ref` lives under this run's folder (so `stageBytes` already counts it); a reference that is not the store's counts as inside (never added). */
  inRun(runId: string, ref: ArtifactRef): boolean {
    const runDir = path.dirname(path.dirname(this.dirFor(runId, '_', '_')));
    try {
      return this.resolve(ref).startsWith(path.resolve(runDir) + path.sep);
    } catch {
      return true;
    }
  }

  /** The folder a stage writes one artifact kind into. Stable for (run, stage, kind), so a retry overwrites its own work only. */
  dirFor(runId: string, stageId: string, kind: string, replica?: number): string {
    const parts = [safe(runId), safe(stageId) + (replica === undefined ? '' : `.replica-${replica}`), safe(kind)];
    return path.join(this.root, 'runs', ...parts);
  }

  /** A scratch folder for checkpoints of one stage. */
  checkpointDir(runId: string, stageId: string, replica?: number): string {
    return this.dirFor(runId, stageId, '_checkpoints', replica);
  }

  async ensureDir(dir: string): Promise<string> {
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Prepares an empty folder for a stage output: leftovers of an earlier attempt are removed first. */
  async freshDir(dir: string): Promise<string> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /**
   * Writes one stage output: a fresh folder for (run, stage, kind[, replica]), `write` fills it,
   * then it is sealed. What `write` returns becomes the reference's `meta`.
   */
  async writeOutput(
    key: { runId: string; stageId: string; kind: string; replica?: number },
    // biome-ignore lint/suspicious/noConfusingVoidType: `write` may resolve nothing: callers pass `async (dir) => writeFile(…)` and plugins' output() callbacks (OutputMeta | void)
    write: (dir: string) => Promise<Record<string, unknown> | void>,
  ): Promise<ArtifactRef> {
    const dir = await this.freshDir(this.dirFor(key.runId, key.stageId, key.kind, key.replica));
    const meta = await write(dir);
    return this.seal(key.kind, dir, meta ?? undefined);
  }

  /**
   * Writes an artifact content-addressed under `namespace` (e.g. `registry/<model>`), as
   * `<namespace>/sha256-<hash>`: `write` fills a staging folder (named by `stagingKey`, so
   * concurrent writers never share one), which is then published. Identical content is stored
   * once, and a folder already there is left untouched (a model server may be reading it).
   */
  async writeContentAddressed(
    opts: { kind: string; namespace: string; stagingKey: string },
    // biome-ignore lint/suspicious/noConfusingVoidType: `write` may resolve nothing: callers pass `async (dir) => writeFile(…)` and plugins' output() callbacks (OutputMeta | void)
    write: (dir: string) => Promise<Record<string, unknown> | void>,
  ): Promise<ArtifactRef> {
    const segments = opts.namespace.split('/');
    if (segments.some((p) => !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p))) throw new Error(`bad artifact namespace ${JSON.stringify(opts.namespace)}`);
    const base = path.join(this.root, ...segments);
    const staging = await this.freshDir(path.join(base, `.staging-${safe(opts.stagingKey)}`));
    try {
      const meta = await write(staging);
      const { sha256 } = await hashTree(staging);
      const dest = path.join(base, `sha256-${sha256}`);
      const already = await stat(dest).then(
        () => true,
        () => false,
      );
      if (already && (await hashTree(dest)).sha256 === sha256) await rm(staging, { recursive: true, force: true });
      else await this.publish(staging, dest);
      return await this.seal(opts.kind, dest, meta ?? undefined);
    } catch (e) {
      await rm(staging, { recursive: true, force: true });
      throw e;
    }
  }

  /** `artifact:` reference of any path inside the store (e.g. a checkpoint, for heartbeat details: small, host-independent). */
  uriOf(absPath: string): string {
    const rel = path.relative(this.root, absPath).split(path.sep).join('/');
    if (rel.startsWith('..') || path.isAbsolute(rel)) throw new Error(`${absPath} is outside the artifact store ${this.root}`);
    return SCHEME + rel;
  }

  /** Hashes a finished artifact folder (or file) and returns its reference (a `capstan.artifact.put` span when tracing). */
  seal(kind: string, absPath: string, meta?: Record<string, unknown>): Promise<ArtifactRef> {
    const uri = this.uriOf(absPath);
    return withSpan(
      'capstan.artifact.put',
      { 'capstan.artifact.store': 'folder', 'capstan.artifact.kind': kind, 'capstan.artifact.uri': uri },
      async (span) => {
        const { sha256, bytes } = await hashTree(absPath);
        span?.setAttribute('capstan.artifact.bytes', bytes);
        return { kind, uri, sha256, bytes, ...(meta ? { meta } : {}) };
      },
    );
  }

  /** Absolute path of a reference. */
  resolve(ref: ArtifactRef | string): string {
    const uri = typeof ref === 'string' ? ref : ref.uri;
    if (!uri.startsWith(SCHEME)) throw new Error(`not an artifact reference: ${uri}`);
    const rel = uri.slice(SCHEME.length);
    const abs = path.resolve(this.root, rel);
    if (!abs.startsWith(path.resolve(this.root) + path.sep)) throw new Error(`artifact reference escapes the store: ${uri}`);
    return abs;
  }

  /** Whether the artifact is present and unchanged since it was sealed. */
  async verify(ref: ArtifactRef): Promise<{ ok: true } | { ok: false; reason: string }> {
    let abs: string;
    try {
      abs = this.resolve(ref);
      await stat(abs);
    } catch {
      return { ok: false, reason: `artifact ${ref.uri} is missing` };
    }
    const { sha256 } = await hashTree(abs);
    if (sha256 !== ref.sha256) return { ok: false, reason: `artifact ${ref.uri} fails its hash check` };
    return { ok: true };
  }

  /**
   * Moves the finished folder `src` to `dest` in one rename. Nothing is ever deleted here: a folder
   * already at `dest` (which a model server may be reading) is first renamed aside to
   * `<dest>.replaced-<time>`, and stays there for the garbage collector.
   */
  async publish(src: string, dest: string): Promise<void> {
    await mkdir(path.dirname(dest), { recursive: true });
    try {
      await rename(src, dest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      await rename(dest, `${dest}.replaced-${Date.now()}`);
      await rename(src, dest);
    }
  }
}

/** SHA-256 over a file, or over the sorted relative names and contents of a folder's files. */
export async function hashTree(absPath: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  const st = await stat(absPath);
  if (st.isFile()) {
    bytes = st.size;
    await pipeFile(absPath, h);
    return { sha256: h.digest('hex'), bytes };
  }
  const files = await listFiles(absPath);
  for (const rel of files) {
    const abs = path.join(absPath, rel);
    const s = await stat(abs);
    bytes += s.size;
    h.update(`${rel}\0${s.size}\0`);
    await pipeFile(abs, h);
  }
  return { sha256: h.digest('hex'), bytes };
}

function pipeFile(abs: string, h: ReturnType<typeof createHash>): Promise<void> {
  return new Promise((resolve, reject) => {
    createReadStream(abs)
      .on('data', (chunk) => h.update(chunk))
      .on('end', () => resolve())
      .on('error', reject);
  });
}

/** Bytes of the regular files under `p` (symlinks not followed; files vanishing meanwhile skipped). */
async function treeBytes(p: string): Promise<number> {
  try {
    const s = await lstat(p);
    if (s.isFile()) return s.size;
    if (!s.isDirectory()) return 0;
    let total = 0;
    for (const e of await readdir(p)) total += await treeBytes(path.join(p, e));
    return total;
  } catch {
    return 0;
  }
}

/** Relative names of the files in a folder, sorted (the order `hashTree` hashes them in). */
export async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(path.join(dir, e.name), rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out;
}

/** A path segment made safe (run ids carry `/`). */
export function safe(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, '_');
}
