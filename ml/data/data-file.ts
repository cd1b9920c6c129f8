import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { DataError } from './data-error.js';

/**
 * A data file opened for reading, with its size when opened: readers never read past it, so a
 * file that grows (or a /proc entry that reports 0 bytes) cannot make them buffer more.
 * `lib/confine-path.ts`'s `openConfined` returns one for user-given paths.
 */
export interface DataFile {
  /** Named in errors. */
  path: string;
  size: number;
  handle: FileHandle;
}

/** Opens a trusted path (tests, tools, bundled data) as it is; user paths go through openConfined. */
export async function openDataFile(file: string): Promise<DataFile> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO does not block the open (and is refused below).
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === 'ENOENT' ? 'file not found' : `cannot open (${code ?? 'error'})`, { code: 'DATA_NOT_FOUND', file });
  }
  const st = await handle.stat();
  if (!st.isFile()) {
    await handle.close();
    throw new DataError('not a regular file', { code: 'DATA_NOT_FOUND', file });
  }
  return { path: file, size: st.size, handle };
}
