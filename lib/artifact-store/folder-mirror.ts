import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { localPathOf } from './bucket-names.js';
import type { Objects } from './s3-objects.js';

export interface FolderMirrorOptions {
  objects: Objects;
  /** The local folder. */
  dir: string;
  /** The key prefix it mirrors (ends with `/`). */
  prefix: string;
  /** Pause between two passes (default 100 ms). */
  everyMs?: number;
  /** Stops by itself after this long without a change on either side (default 30 min): a safety net for an attempt that never closed it. */
  idleStopMs?: number;
  onError?: (e: unknown) => void;
}

interface FileState {
  size: number;
  mtimeMs: number;
}

/**
 * Keeps a local folder in step with a key prefix, both ways, for files that are written once by
 * rename (the replicas' round files): files that appear locally are uploaded; objects that
 * appear remotely and were never seen before are downloaded (aside, then renamed, so a reader
 * never sees half a file); a file this mirror uploaded and that was then removed locally is
 * removed remotely too (the replicas' clean-up of old rounds). A removed file is never fetched
 * again. Temporary files (`*.tmp`, `*.part-*`) are left alone. A listed key whose rest is not a
 * safe relative name (`..`, absolute, backslash, NUL, empty segment) is never fetched: it is
 * reported through `onError` (ARTIFACT_UNSAFE_NAME) once and skipped.
 */
export class FolderMirror {
  private readonly uploaded = new Map<string, FileState>();
  private readonly downloaded = new Map<string, FileState>();
  private readonly seenRemote = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private lastChange = Date.now();

  constructor(private readonly o: FolderMirrorOptions) {}

  /** One pass that fetches everything already there (before the caller reads the folder). */
  async pull(): Promise<void> {
    await this.pass({ push: false });
  }

  start(): void {
    const every = this.o.everyMs ?? 100;
    const loop = () => {
      if (this.stopped) return;
      this.running = this.pass({ push: true })
        .catch((e: unknown) => this.o.onError?.(e))
        .finally(() => {
          this.running = undefined;
          if (Date.now() - this.lastChange > (this.o.idleStopMs ?? 30 * 60_000)) this.stopped = true;
          if (!this.stopped) {
            this.timer = setTimeout(loop, every);
            this.timer.unref();
          }
        });
    };
    loop();
  }

  /** Stops after one last pass (so what this host wrote last is uploaded). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await this.pass({ push: true });
  }

  private async pass(o: { push: boolean }): Promise<void> {
    const local = await walk(this.o.dir);
    if (o.push) {
      for (const [rel, st] of local) {
        const up = this.uploaded.get(rel);
        if (up && up.size === st.size && up.mtimeMs === st.mtimeMs) continue;
        const down = this.downloaded.get(rel);
        if (down && down.size === st.size && down.mtimeMs === st.mtimeMs) continue;
        try {
          await this.o.objects.putFile(this.o.prefix + rel, path.join(this.o.dir, rel));
        } catch (e) {
          // Removed locally (an old round cleaned up) before it went up: nothing to upload.
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw e;
        }
        this.uploaded.set(rel, st);
        this.seenRemote.add(rel);
        this.lastChange = Date.now();
      }
      for (const rel of [...this.uploaded.keys()]) {
        if (local.has(rel)) continue;
        this.uploaded.delete(rel);
        await this.o.objects.delete(this.o.prefix + rel).catch(() => undefined);
        this.lastChange = Date.now();
      }
    }
    for (const obj of await this.o.objects.list(this.o.prefix)) {
      const rel = obj.key.slice(this.o.prefix.length);
      if (!rel || this.seenRemote.has(rel)) continue;
      this.seenRemote.add(rel);
      if (local.has(rel) || /\.tmp$|\.part-/.test(rel)) continue;
      let file: string;
      try {
        file = localPathOf(this.o.dir, rel, `the shared folder's listing (${this.o.prefix})`);
      } catch (e) {
        // Never fetched, reported once (it stays in seenRemote); the other files keep flowing.
        this.o.onError?.(e);
        continue;
      }
      try {
        await this.o.objects.getFile(obj.key, file);
      } catch (e) {
        // Removed by its writer between the listing and the download: nothing to fetch.
        this.seenRemote.delete(rel);
        if ((e as { name?: string }).name === 'NoSuchKey') continue;
        throw e;
      }
      const st = await stat(file);
      this.downloaded.set(rel, { size: st.size, mtimeMs: st.mtimeMs });
      this.lastChange = Date.now();
    }
  }
}

async function walk(dir: string, prefix = '', out = new Map<string, FileState>()): Promise<Map<string, FileState>> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) await walk(path.join(dir, e.name), rel, out);
    else if (e.isFile() && !/\.tmp$|\.part-/.test(e.name)) {
      try {
        const st = await stat(path.join(dir, e.name));
        out.set(rel, { size: st.size, mtimeMs: st.mtimeMs });
      } catch {
        // removed meanwhile
      }
    }
  }
  return out;
}
