import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { DataError } from './data-error.js';

/** IDX element type codes (third magic byte). Only unsigned bytes are used by image/label sets. */
const IDX_TYPES: Record<number, string> = { 0x08: 'ubyte', 0x09: 'byte', 0x0b: 'short', 0x0c: 'int', 0x0d: 'float', 0x0e: 'double' };

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
  if (buf.length < 4) throw new DataError(`not an IDX file: ${buf.length} bytes, shorter than the 4-byte magic number`, { code: 'DATA_CORRUPT', file });
  if (buf[0] !== 0 || buf[1] !== 0) {
    const magic = Array.from(buf.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join('');
    throw new DataError(`not an IDX file: bad magic number 0x${magic} (expected 0x0000 then type and rank)`, { code: 'DATA_CORRUPT', file });
  }
  const type = buf[2]!;
  const rank = buf[3]!;
  if (IDX_TYPES[type] === undefined) throw new DataError(`not an IDX file: unknown element type 0x${type.toString(16)}`, { code: 'DATA_CORRUPT', file });
  if (type !== 0x08) throw new DataError(`IDX element type ${IDX_TYPES[type]} is not supported (only ubyte, 0x08)`, { code: 'DATA_UNSUPPORTED', file });
  if (rank === 0) throw new DataError('IDX file declares 0 dimensions', { code: 'DATA_CORRUPT', file });
  if (opts.expectDims !== undefined && rank !== opts.expectDims) {
    throw new DataError(`expected ${opts.expectDims} dimension(s) (${opts.expectDims === 1 ? 'labels' : 'images'}) but the header declares ${rank}`, { code: 'DATA_CORRUPT', file });
  }
  const headerBytes = 4 + 4 * rank;
  if (buf.length < headerBytes) throw new DataError(`truncated header: needs ${headerBytes} bytes, file has ${buf.length}`, { code: 'DATA_CORRUPT', file });
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  let size = 1;
  for (let i = 0; i < rank; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    if (d === 0 || d > 0x7fffffff) throw new DataError(`dimension ${i} is ${d}`, { code: 'DATA_CORRUPT', file });
    dims.push(d);
    size *= d;
  }
  const payload = buf.length - headerBytes;
  if (payload !== size) {
    const what = payload < size ? 'truncated' : 'has trailing bytes';
    throw new DataError(`${what}: header dimensions [${dims.join('×')}] need ${size} data bytes, file has ${payload}`, { code: 'DATA_CORRUPT', file });
  }
  return { dims, data: buf.subarray(headerBytes) };
}

async function readBytes(file: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(file));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`, { code: 'DATA_NOT_FOUND', file });
  }
}

export function parseIdxImages(buf: Uint8Array, file: string): IdxImages {
  const t = parseIdx(buf, { file, expectDims: 3 });
  const [count, rows, cols] = t.dims as [number, number, number];
  return { count, rows, cols, pixels: t.data };
}

export function parseIdxLabels(buf: Uint8Array, file: string, numClasses = 10): IdxLabels {
  const t = parseIdx(buf, { file, expectDims: 1 });
  const labels = t.data;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i]! >= numClasses) {
      throw new DataError(`label ${labels[i]} at index ${i} is outside 0..${numClasses - 1}`, { code: 'DATA_CORRUPT', file });
    }
  }
  return { count: t.dims[0]!, labels };
}

export async function readIdxImages(file: string): Promise<IdxImages> {
  return parseIdxImages(await readBytes(file), file);
}

export async function readIdxLabels(file: string, numClasses = 10): Promise<IdxLabels> {
  return parseIdxLabels(await readBytes(file), file, numClasses);
}

/** Reads a matching pair of image and label files; their counts must agree. */
export async function readIdxPair(opts: { images: string; labels: string; numClasses?: number }): Promise<{ images: IdxImages; labels: IdxLabels }> {
  const images = await readIdxImages(opts.images);
  const labels = await readIdxLabels(opts.labels, opts.numClasses);
  if (images.count !== labels.count) {
    throw new DataError(`${images.count} images in ${path.basename(opts.images)} but ${labels.count} labels in ${path.basename(opts.labels)}`, {
      code: 'DATA_MISMATCH',
      file: opts.labels,
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
