// Confines user-given data paths to configured root folders. Two checks: `pathProblem` is
// lexical (no file system access: usable while validating a spec in the API process), and
// `openConfined` is the full check in the process that reads the file: symlinks resolved,
// the real path inside a root, a regular file (no FIFO, device, socket, /proc or /sys entry)
// within a size cap, opened without following a last-moment symlink and without blocking on a
// FIFO swapped in after the check. Refusals name the path and the rule, never file content.
import { constants, type Stats } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { StageError } from './errors.js';

/** Error type of every refusal (non-retryable). */
export const DATA_PATH_REFUSED = 'DATA_PATH_REFUSED';

/** The rule a refused path broke (in `details.rule` of the error). */
export type PathRule = 'dot-dot' | 'outside-roots' | 'symlink-escape' | 'virtual-filesystem' | 'not-regular-file' | 'too-large' | 'no-roots';

/** Default per-file size cap: 2 GiB. */
export const DEFAULT_MAX_DATA_FILE_BYTES = 2 * 1024 ** 3;

export interface ConfineOptions {
  /** Absolute folders data may come from. Relative paths are resolved against the first. */
  roots: readonly string[];
}

export interface ConfinedFile {
  /** The path as resolved against the first root (what errors name). */
  path: string;
  /** After symlink resolution. */
  realPath: string;
  /** Bytes, from fstat of the opened descriptor. Read at most this many. */
  size: number;
  /** Open for reading; the caller closes it. */
  handle: FileHandle;
}

/** Folders whose entries are never data, whatever the roots say. */
const VIRTUAL_FS = ['/proc', '/sys', '/dev'];

/** Resolves a user path: relative paths against the first root. Lexical only. */
export function resolveDataPath(userPath: string, opts: ConfineOptions): string {
  const base = opts.roots[0];
  return path.isAbsolute(userPath) || base === undefined ? path.resolve(userPath) : path.resolve(base, userPath);
}

/**
 * The lexical check: `..` segments are refused outright, and the resolved path must lie inside
 * one of the roots. Returns the rule and a message, or undefined when the path may be tried.
 */
export function pathProblem(userPath: string, opts: ConfineOptions): { rule: PathRule; message: string } | undefined {
  if (opts.roots.length === 0) return { rule: 'no-roots', message: refusal(userPath, 'no data roots are configured (CAPSTAN_DATA_ROOTS)') };
  if (userPath.split(/[\\/]/).includes('..')) return { rule: 'dot-dot', message: refusal(userPath, '".." segments are not allowed in data paths') };
  const resolved = resolveDataPath(userPath, opts);
  if (isVirtual(resolved)) return { rule: 'virtual-filesystem', message: refusal(userPath, `${resolved} is in /proc, /sys or /dev, which never hold data files`) };
  if (!opts.roots.some((r) => inside(path.resolve(r), resolved))) {
    return { rule: 'outside-roots', message: refusal(userPath, `${path.isAbsolute(userPath) ? 'absolute paths' : 'paths'} must lie inside a data root (${rootsText(opts.roots)}; set CAPSTAN_DATA_ROOTS to allow another folder)`) };
  }
  return undefined;
}

/**
 * Opens a data file after every check. Throws a non-retryable StageError (`DATA_PATH_REFUSED`,
 * details `{ path, rule }`) for a refused path, `DATA_NOT_FOUND` for a missing file inside the roots.
 */
export async function openConfined(userPath: string, opts: ConfineOptions & { maxBytes?: number }): Promise<ConfinedFile> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_DATA_FILE_BYTES;
  const lexical = pathProblem(userPath, opts);
  if (lexical) throw refused(userPath, lexical.rule, lexical.message);
  const resolved = resolveDataPath(userPath, opts);

  let real: string;
  try {
    real = await realpath(resolved);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new StageError(`data file ${resolved} not found`, { type: 'DATA_NOT_FOUND', details: { path: resolved } });
    }
    throw new StageError(`data file ${resolved} cannot be resolved (${code ?? 'error'})`, { type: 'DATA_NOT_FOUND', details: { path: resolved } });
  }
  const realRoots = await realRootsOf(opts.roots);
  if (isVirtual(real)) throw refused(userPath, 'virtual-filesystem', refusal(userPath, 'it resolves into /proc, /sys or /dev, which never hold data files'));
  if (!realRoots.some((r) => inside(r, real))) {
    throw refused(userPath, 'symlink-escape', refusal(userPath, 'it resolves, through a symlink, to a location outside the data roots'));
  }
  // stat before open: opening a FIFO for reading would block until a writer appears.
  const st = await stat(real);
  checkStats(userPath, st, maxBytes);

  // O_NONBLOCK: a FIFO swapped in after the stat cannot block the open; O_NOFOLLOW: nor can a
  // symlink swapped in at the last component. fstat then checks what was actually opened.
  let handle: FileHandle;
  try {
    handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw refused(userPath, 'symlink-escape', refusal(userPath, 'it became a symlink while being opened'));
    throw new StageError(`data file ${resolved} cannot be opened (${code ?? 'error'})`, { type: code === 'ENOENT' ? 'DATA_NOT_FOUND' : 'DATA_UNREADABLE', details: { path: resolved } });
  }
  try {
    const fst = await handle.stat();
    checkStats(userPath, fst, maxBytes);
    if (fst.ino !== st.ino || fst.dev !== st.dev) throw refused(userPath, 'symlink-escape', refusal(userPath, 'it was replaced while being opened'));
    return { path: resolved, realPath: real, size: fst.size, handle };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

/** Reads a whole confined file (at most its fstat size), closing it. For small files: use a stream otherwise. */
export async function readConfined(file: ConfinedFile): Promise<Uint8Array> {
  try {
    const buf = new Uint8Array(file.size);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await file.handle.read(buf, off, buf.length - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return off === buf.length ? buf : buf.subarray(0, off);
  } finally {
    await file.handle.close();
  }
}

function checkStats(userPath: string, st: Stats, maxBytes: number): void {
  if (!st.isFile()) throw refused(userPath, 'not-regular-file', refusal(userPath, `it is ${kindOf(st)}, not a regular file`));
  if (st.size > maxBytes) throw refused(userPath, 'too-large', refusal(userPath, `it is ${st.size} bytes, over the limit of ${maxBytes} bytes per data file`));
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symlink';
  return 'not a regular file';
}

function refusal(userPath: string, why: string): string {
  return `data path ${JSON.stringify(userPath)} is refused: ${why}`;
}

function refused(userPath: string, rule: PathRule, message: string): StageError {
  return new StageError(message, { type: DATA_PATH_REFUSED, retryable: false, details: { path: userPath, rule } });
}

function inside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

function isVirtual(p: string): boolean {
  return VIRTUAL_FS.some((v) => p === v || p.startsWith(`${v}/`));
}

function rootsText(roots: readonly string[]): string {
  return roots.map((r) => path.resolve(r)).join(', ');
}

/** The roots after symlink resolution; a root that does not exist holds nothing. */
async function realRootsOf(roots: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const r of roots) {
    try {
      out.push(await realpath(path.resolve(r)));
    } catch {
      // a missing root holds no files
    }
  }
  return out;
}
