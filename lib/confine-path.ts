// Confines user-given data paths to configured root folders. Two checks: `pathProblem` is
// lexical (no file system access: usable while validating a spec in the API process), and
// `openConfined` is the full check in the process that reads the file: symlinks resolved,
// the real path inside a root, a regular file (no FIFO, device, socket, /proc or /sys entry)
// within a size cap; and what decides is the opened descriptor, not the path checked before it
// (a folder in the path swapped for a symlink between check and open is caught). Refusals name
// the path and the rule, never file content.
import { constants, type Stats } from 'node:fs';
import { open, readlink, realpath, stat, type FileHandle } from 'node:fs/promises';
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
  /** After symlink resolution: on Linux, the kernel's name for the opened file. */
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
  if (isVirtual(resolved))
    return { rule: 'virtual-filesystem', message: refusal(userPath, `${resolved} is in /proc, /sys or /dev, which never hold data files`) };
  if (!opts.roots.some((r) => inside(path.resolve(r), resolved))) {
    return {
      rule: 'outside-roots',
      message: refusal(
        userPath,
        `${path.isAbsolute(userPath) ? 'absolute paths' : 'paths'} must lie inside a data root (${rootsText(opts.roots)}; set CAPSTAN_DATA_ROOTS to allow another folder)`,
      ),
    };
  }
  return undefined;
}

/**
 * Opens a data file after every check. Throws a non-retryable StageError (`DATA_PATH_REFUSED`,
 * details `{ path, rule }`) for a refused path, `DATA_NOT_FOUND` for a missing file inside the roots.
 *
 * The checks on the path (realpath, stat) come first, for clear refusals without opening
 * anything; but a path can change between a check and the open (a folder earlier in it swapped
 * for a symlink), so what decides is the opened descriptor itself: on Linux the file is opened
 * as an O_PATH descriptor (no driver is opened, no FIFO blocks), the kernel's own name for it
 * (`/proc/self/fd/<fd>`) must lie inside a root and fstat must show a regular file within the
 * cap, and only then is that same file opened for reading through the descriptor.
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
    throw notOpened(resolved, e, 'resolved');
  }
  const realRoots = await realRootsOf(opts.roots);
  if (isVirtual(real)) throw refused(userPath, 'virtual-filesystem', refusal(userPath, 'it resolves into /proc, /sys or /dev, which never hold data files'));
  if (!realRoots.some((r) => inside(r, real))) {
    throw refused(userPath, 'symlink-escape', refusal(userPath, 'it resolves, through a symlink, to a location outside the data roots'));
  }
  // stat before open: opening a FIFO for reading would block until a writer appears.
  let st: Stats;
  try {
    st = await stat(real);
  } catch (e) {
    throw notOpened(resolved, e, 'read');
  }
  checkStats(userPath, st, maxBytes);

  const checked = { userPath, resolved, real, realRoots, maxBytes };
  const opened = (await procFdUsable()) ? await openByDescriptor(checked) : await openByPath(checked, st);
  return { path: resolved, realPath: opened.realPath ?? real, size: opened.size, handle: opened.handle };
}

/** An open file for reading and its size (from fstat of that descriptor); with the kernel's name for it where known. */
interface Opened {
  handle: FileHandle;
  size: number;
  realPath?: string;
}

interface Checked {
  userPath: string;
  resolved: string;
  real: string;
  realRoots: string[];
  maxBytes: number;
}

/** Linux's O_PATH (asm-generic and x86): a descriptor that names a file without opening it for I/O. Node does not export it. */
const O_PATH = 0o10000000;

/**
 * Linux: opens `real` as an O_PATH descriptor (O_NOFOLLOW: a symlink swapped in at the last
 * component is opened as the link, and refused), checks what the kernel says it is and where it
 * lies, then reopens that very file for reading through `/proc/self/fd/<fd>`.
 */
async function openByDescriptor(c: Checked): Promise<Opened> {
  let located: FileHandle;
  try {
    located = await open(c.real, O_PATH | constants.O_NOFOLLOW);
  } catch (e) {
    throw notOpened(c.resolved, e, 'opened');
  }
  try {
    const st = await located.stat();
    if (st.isSymbolicLink()) throw refused(c.userPath, 'symlink-escape', refusal(c.userPath, 'it became a symlink while being opened'));
    const where = await readlink(`/proc/self/fd/${located.fd}`).catch(() => undefined);
    if (where === undefined || isVirtual(where) || !c.realRoots.some((r) => inside(r, where))) {
      throw refused(c.userPath, 'symlink-escape', refusal(c.userPath, 'it was swapped for a location outside the data roots while being opened'));
    }
    checkStats(c.userPath, st, c.maxBytes);
    let handle: FileHandle;
    try {
      handle = await open(`/proc/self/fd/${located.fd}`, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    } catch (e) {
      throw notOpened(c.resolved, e, 'opened');
    }
    return { ...(await sameFileOr(handle, st, c)), realPath: where };
  } finally {
    await located.close();
  }
}

/**
 * Elsewhere (no /proc): opens `real` for reading without following a last-moment symlink or
 * blocking on a FIFO, then resolves the path again and asks that it still names the opened file
 * inside a root. This narrows the window; only the descriptor check above closes it.
 */
async function openByPath(c: Checked, st: Stats): Promise<Opened> {
  let handle: FileHandle;
  try {
    handle = await open(c.real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP')
      throw refused(c.userPath, 'symlink-escape', refusal(c.userPath, 'it became a symlink while being opened'));
    throw notOpened(c.resolved, e, 'opened');
  }
  const opened = await sameFileOr(handle, st, c);
  try {
    const again = await realpath(c.resolved);
    const now = await stat(again);
    if (!c.realRoots.some((r) => inside(r, again)) || now.ino !== st.ino || now.dev !== st.dev) throw new Error('moved');
  } catch {
    await handle.close();
    throw refused(c.userPath, 'symlink-escape', refusal(c.userPath, 'it was replaced while being opened'));
  }
  return opened;
}

/** The handle and its size when it is the file `st` describes and passes the checks; closed and refused otherwise. */
async function sameFileOr(handle: FileHandle, st: Stats, c: Checked): Promise<Opened> {
  try {
    const fst = await handle.stat();
    checkStats(c.userPath, fst, c.maxBytes);
    if (fst.ino !== st.ino || fst.dev !== st.dev) throw refused(c.userPath, 'symlink-escape', refusal(c.userPath, 'it was replaced while being opened'));
    return { handle, size: fst.size };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

let procFd: Promise<boolean> | undefined;
/** Whether the kernel names open descriptors in /proc/self/fd (Linux with /proc mounted). */
function procFdUsable(): Promise<boolean> {
  procFd ??=
    process.platform !== 'linux'
      ? Promise.resolve(false)
      : stat('/proc/self/fd').then(
          (s) => s.isDirectory(),
          () => false,
        );
  return procFd;
}

/** A file inside the roots that could not be resolved, read or opened: missing, or unreadable. */
function notOpened(resolved: string, e: unknown, what: 'resolved' | 'read' | 'opened'): StageError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR')
    return new StageError(`data file ${resolved} not found`, { type: 'DATA_NOT_FOUND', details: { path: resolved } });
  return new StageError(`data file ${resolved} cannot be ${what} (${code ?? 'error'})`, {
    type: what === 'resolved' ? 'DATA_NOT_FOUND' : 'DATA_UNREADABLE',
    details: { path: resolved },
  });
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
