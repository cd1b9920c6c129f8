import path from 'node:path';
import { DataError } from './data-error.js';
import { openDataFile, type DataFile } from './data-file.js';

/** IDX element type codes (third magic byte). Only unsigned bytes are used by image/label sets. */
const IDX_TYPES: Record<number, string> = { 8: 'ubyte', 9: 'byte', 11: 'short', 12: 'int', 13: 'float', 14: 'double' };

export interface IdxTensor {
  dims: number[];
  data: Uint8Array;
}

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  /** count × rows × cols bytes, row-major. */
  pixels: Uint8Array;
}

export interface IdxLabels {
  count: number;
  labels: Uint8Array;
}

/**
 * Parses an IDX buffer of unsigned bytes and checks its header: the magic number (two zero
 * bytes, type 0x08, number of dimensions), the expected number of dimensions, and that the
 * payload is exactly as long as the dimensions say.
 */
export function parseIdx(buf: Uint8Array, opts: { file: string; expectDims?: number }): IdxTensor {
  const file = opts.file;
  const dims = parseIdxHeader(buf, opts);
  const headerBytes = 4 + 4 * dims.length;
  const size = dims.reduce((a, b) => a * BigInt(b), 1n);
  const payload = buf.length - headerBytes;
  if (BigInt(payload) !== size) {
    const what = BigInt(payload) < size ? 'truncated' : 'has trailing bytes';
    throw new DataError(`${what}: header dimensions [${dims.join('×')}] need ${size} data bytes, file has ${payload}`, { code: 'DATA_CORRUPT', file });
  }
  return { dims, data: buf.subarray(headerBytes) };
}

/**
 * Reads an IDX file: the header first, then — only once the dimensions it declares agree with
 * the file's size — the payload, so a corrupt or hostile header cannot make us allocate more
 * than the file holds. Closes the file.
 */
export async function readIdxFile(src: string | DataFile, opts: { expectDims?: number } = {}): Promise<IdxTensor> {
  const f = typeof src === 'string' ? await openDataFile(src) : src;
  const file = f.path;
  try {
    const read = async (pos: number, n: number): Promise<Uint8Array> => {
      const buf = new Uint8Array(n);
      let off = 0;
      while (off < n) {
        const { bytesRead } = await f.handle.read(buf, off, n - off, pos + off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return off === n ? buf : buf.subarray(0, off);
    };
    const magic = await read(0, Math.min(4, f.size));
    const rank = magic.length === 4 && magic[0] === 0 && magic[1] === 0 ? magic[3]! : 0;
    const headerBytes = Math.min(f.size, 4 + 4 * rank);
    // Parse the header alone (as if the payload were there) to check magic, type and dimensions.
    const header = await read(0, headerBytes);
    const dims = parseIdxHeader(header, { file, ...opts });
    const size = dims.reduce((a, b) => a * BigInt(b), 1n);
    const payload = f.size - (4 + 4 * dims.length);
    if (BigInt(payload) !== size) {
      const what = BigInt(payload) < size ? 'truncated' : 'has trailing bytes';
      throw new DataError(`${what}: header dimensions [${dims.join('×')}] need ${size} data bytes, file has ${payload}`, { code: 'DATA_CORRUPT', file });
    }
    const data = await read(4 + 4 * dims.length, Number(size));
    if (BigInt(data.length) !== size) throw new DataError(`truncated while reading: ${data.length} of ${size} data bytes`, { code: 'DATA_CORRUPT', file });
    return { dims, data };
  } finally {
    await f.handle.close().catch(() => undefined);
  }
}

/** Checks the magic number, element type and rank, and returns the declared dimensions. */
function parseIdxHeader(buf: Uint8Array, opts: { file: string; expectDims?: number }): number[] {
  const file = opts.file;
  if (buf.length < 4) throw new DataError(`not an IDX file: ${buf.length} bytes, shorter than the 4-byte magic number`, { code: 'DATA_CORRUPT', file });
  // The magic number's bytes are the file's first bytes (of whatever file was named): said wrong, never shown.
  const expected =
    opts.expectDims !== undefined
      ? `0x000008${opts.expectDims.toString(16).padStart(2, '0')} (unsigned bytes, ${opts.expectDims} dimension${opts.expectDims === 1 ? '' : 's'})`
      : '0x0000 then the element type and the rank';
  if (buf[0] !== 0 || buf[1] !== 0) throw new DataError(`not an IDX file: bad magic number (expected ${expected})`, { code: 'DATA_CORRUPT', file });
  const type = buf[2]!;
  const rank = buf[3]!;
  if (IDX_TYPES[type] === undefined)
    throw new DataError(`not an IDX file: bad magic number, unknown element type (expected ${expected})`, { code: 'DATA_CORRUPT', file });
  if (type !== 0x08) throw new DataError(`IDX element type ${IDX_TYPES[type]} is not supported (only ubyte, 0x08)`, { code: 'DATA_UNSUPPORTED', file });
  if (rank === 0) throw new DataError('IDX file declares 0 dimensions', { code: 'DATA_CORRUPT', file });
  if (opts.expectDims !== undefined && rank !== opts.expectDims) {
    throw new DataError(`expected ${opts.expectDims} dimension(s) (${opts.expectDims === 1 ? 'labels' : 'images'}) but the header declares ${rank}`, {
      code: 'DATA_CORRUPT',
      file,
    });
  }
  const headerBytes = 4 + 4 * rank;
  if (buf.length < headerBytes) throw new DataError(`truncated header: needs ${headerBytes} bytes, file has ${buf.length}`, { code: 'DATA_CORRUPT', file });
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    if (d === 0 || d > 0x7fffffff) throw new DataError(`dimension ${i} is ${d}`, { code: 'DATA_CORRUPT', file });
    dims.push(d);
  }
  return dims;
}

export function parseIdxImages(buf: Uint8Array, file: string): IdxImages {
  return imagesOf(parseIdx(buf, { file, expectDims: 3 }));
}

export function parseIdxLabels(buf: Uint8Array, file: string, numClasses = 10): IdxLabels {
  return labelsOf(parseIdx(buf, { file, expectDims: 1 }), file, numClasses);
}

function imagesOf(t: IdxTensor): IdxImages {
  const [count, rows, cols] = t.dims as [number, number, number];
  return { count, rows, cols, pixels: t.data };
}

function labelsOf(t: IdxTensor, file: string, numClasses: number): IdxLabels {
  const labels = t.data;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i]! >= numClasses) {
      throw new DataError(`label ${labels[i]} at index ${i} is outside 0..${numClasses - 1}`, { code: 'DATA_CORRUPT', file });
    }
  }
  return { count: t.dims[0]!, labels };
}

export async function readIdxImages(file: string | DataFile): Promise<IdxImages> {
  return imagesOf(await readIdxFile(file, { expectDims: 3 }));
}

export async function readIdxLabels(file: string | DataFile, numClasses = 10): Promise<IdxLabels> {
  const f = typeof file === 'string' ? file : file.path;
  return labelsOf(await readIdxFile(file, { expectDims: 1 }), f, numClasses);
}

/** Reads a matching pair of image and label files (paths, or opened files); their counts must agree. */
export async function readIdxPair(opts: {
  images: string | DataFile;
  labels: string | DataFile;
  numClasses?: number;
}): Promise<{ images: IdxImages; labels: IdxLabels }> {
  const imagesPath = typeof opts.images === 'string' ? opts.images : opts.images.path;
  const labelsPath = typeof opts.labels === 'string' ? opts.labels : opts.labels.path;
  let images: IdxImages;
  try {
    images = await readIdxImages(opts.images);
  } catch (e) {
    if (typeof opts.labels !== 'string') await opts.labels.handle.close().catch(() => undefined);
    throw e;
  }
  const labels = await readIdxLabels(opts.labels, opts.numClasses);
  if (images.count !== labels.count) {
    throw new DataError(`${images.count} images in ${path.basename(imagesPath)} but ${labels.count} labels in ${path.basename(labelsPath)}`, {
      code: 'DATA_MISMATCH',
      file: labelsPath,
    });
  }
  return { images, labels };
}

/** Encodes an IDX ubyte file (used by tests and tools). */
export function encodeIdx(dims: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}
