import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DataError } from './data-error.js';
import { mixSeed, permutation } from './rng.js';

export const DATASET_FORMAT = 'capstan-dataset';
export const DATASET_VERSION = 1;
export const SPLIT_NAMES = ['train', 'validation', 'test'] as const;
export type SplitName = (typeof SPLIT_NAMES)[number];

/** How stored feature values map to model inputs: `input = (x - mean) / std` or `input = x * factor`. */
export type Normalization = { kind: 'scale'; factor: number } | { kind: 'zscore'; mean: number[]; std: number[] };

export interface DatasetSplit {
  count: number;
  /** count × prod(featureShape), row-major, in the stored dtype (not yet normalised for uint8). */
  x: Uint8Array | Float32Array;
  y: Uint8Array;
}

export interface Dataset {
  featureShape: number[];
  numClasses: number;
  normalization: Normalization;
  /** Smallest and largest model input (after normalisation) in the training split. */
  inputRange?: [number, number];
  splits: Partial<Record<SplitName, DatasetSplit>> & { train: DatasetSplit; validation: DatasetSplit };
}

export interface DatasetFileInfo {
  name: string;
  dtype: 'uint8' | 'float32';
  shape: number[];
  bytes: number;
  sha256: string;
}

export interface DatasetManifest {
  format: typeof DATASET_FORMAT;
  version: typeof DATASET_VERSION;
  featureShape: number[];
  numClasses: number;
  normalization: Normalization;
  /** Smallest and largest model input (after normalisation) in the training split; absent in datasets written before it was recorded. */
  inputRange?: [number, number];
  splits: Partial<Record<SplitName, { count: number; classCounts: number[]; x: DatasetFileInfo; y: DatasetFileInfo }>>;
  source?: Record<string, unknown>;
}

/** A seeded split of 0..n-1 into train and validation index sets. */
export function splitIndices(n: number, opts: { validationFraction: number; seed: number }): { train: Uint32Array; validation: Uint32Array } {
  const perm = permutation(n, mixSeed(opts.seed, 1));
  const nVal = Math.round(n * opts.validationFraction);
  return { validation: perm.slice(0, nVal), train: perm.slice(nVal) };
}

/** Copies the rows `idx` of a row-major array with `rowSize` values per row. */
export function gatherRows<T extends Uint8Array | Float32Array>(src: T, rowSize: number, idx: ArrayLike<number>): T {
  const Ctor = src.constructor as { new (n: number): T };
  const out = new Ctor(idx.length * rowSize);
  for (let i = 0; i < idx.length; i++) {
    const r = idx[i]!;
    out.set(src.subarray(r * rowSize, (r + 1) * rowSize), i * rowSize);
  }
  return out;
}

export function classCounts(y: Uint8Array, numClasses: number): number[] {
  const c = new Array<number>(numClasses).fill(0);
  for (const v of y) c[v] = (c[v] ?? 0) + 1;
  return c;
}

export interface BuildDatasetInput {
  featureShape: number[];
  numClasses: number;
  /** The labelled pool that is split into train and validation. */
  pool: { x: Uint8Array | Float32Array; y: Uint8Array };
  test?: { x: Uint8Array | Float32Array; y: Uint8Array };
  validationFraction: number;
  seed: number;
  /** Keep only a seeded random subset of this many pool rows (and at most this many test rows). */
  limit?: number;
  /**
   * 'scale' keeps uint8 pixels as stored and records factor 1/255; 'zscore' standardises float
   * features with the training split's mean and std.
   */
  normalize: 'scale255' | 'zscore';
}

/** Subsets, splits and normalises in memory. Pure: no I/O. */
export function buildDataset(input: BuildDatasetInput): Dataset {
  const rowSize = input.featureShape.reduce((a, b) => a * b, 1);
  let poolIdx: ArrayLike<number> = range(input.pool.y.length);
  if (input.limit !== undefined && input.limit < input.pool.y.length) {
    poolIdx = permutation(input.pool.y.length, mixSeed(input.seed, 0)).slice(0, input.limit);
  }
  const { train, validation } = splitIndices(poolIdx.length, { validationFraction: input.validationFraction, seed: input.seed });
  const pick = (local: Uint32Array): DatasetSplit => {
    const rows = Array.from(local, (i) => poolIdx[i]!);
    return { count: rows.length, x: gatherRows(input.pool.x, rowSize, rows), y: gatherRows(input.pool.y, 1, rows) };
  };
  const splits: Dataset['splits'] = { train: pick(train), validation: pick(validation) };
  if (input.test) {
    const n = input.limit !== undefined ? Math.min(input.limit, input.test.y.length) : input.test.y.length;
    const rows = range(n);
    splits.test = { count: n, x: gatherRows(input.test.x, rowSize, rows), y: gatherRows(input.test.y, 1, rows) };
  }
  let normalization: Normalization;
  if (input.normalize === 'scale255') {
    normalization = { kind: 'scale', factor: 1 / 255 };
  } else {
    const { mean, std } = columnStats(toFloat(splits.train.x), rowSize);
    // Stored values are standardised; the stats stay in the manifest so serving can do the same.
    for (const s of Object.values(splits)) s.x = standardise(toFloat(s.x), mean, std);
    normalization = { kind: 'zscore', mean, std };
  }
  const ds: Dataset = { featureShape: input.featureShape, numClasses: input.numClasses, normalization, splits };
  return { ...ds, inputRange: inputRangeOf(ds, splits.train) };
}

/** Smallest and largest model input of a split (0, 0 when it is empty). */
export function inputRangeOf(ds: Dataset, split: DatasetSplit): [number, number] {
  if (split.x.length === 0) return [0, 0];
  const factor = split.x instanceof Float32Array ? 1 : ds.normalization.kind === 'scale' ? ds.normalization.factor : 1;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < split.x.length; i++) {
    const v = split.x[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo * factor, hi * factor];
}

/** Model inputs for a split: float32, normalised as the manifest says (z-scored data is stored standardised). */
export function inputsOf(ds: Dataset, split: DatasetSplit): Float32Array {
  if (split.x instanceof Float32Array) return split.x;
  const factor = ds.normalization.kind === 'scale' ? ds.normalization.factor : 1;
  const out = new Float32Array(split.x.length);
  for (let i = 0; i < out.length; i++) out[i] = split.x[i]! * factor;
  return out;
}

/** Writes the dataset folder: `<split>-x.bin`, `<split>-y.bin` and `manifest.json` (written last, atomically). */
export async function writeDataset(dir: string, ds: Dataset, source?: Record<string, unknown>): Promise<DatasetManifest> {
  await mkdir(dir, { recursive: true });
  const manifest: DatasetManifest = {
    format: DATASET_FORMAT,
    version: DATASET_VERSION,
    featureShape: ds.featureShape,
    numClasses: ds.numClasses,
    normalization: ds.normalization,
    ...(ds.inputRange ? { inputRange: ds.inputRange } : {}),
    splits: {},
    ...(source ? { source } : {}),
  };
  for (const name of SPLIT_NAMES) {
    const s = ds.splits[name];
    if (!s) continue;
    const x = await writeBin(dir, `${name}-x.bin`, s.x, [s.count, ...ds.featureShape]);
    const y = await writeBin(dir, `${name}-y.bin`, s.y, [s.count]);
    manifest.splits[name] = { count: s.count, classCounts: classCounts(s.y, ds.numClasses), x, y };
  }
  const tmp = path.join(dir, `.manifest.json.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(manifest, null, 2));
  await rename(tmp, path.join(dir, 'manifest.json'));
  return manifest;
}

export async function readDatasetManifest(dir: string): Promise<DatasetManifest> {
  const file = path.join(dir, 'manifest.json');
  let m: DatasetManifest;
  try {
    m = JSON.parse(await readFile(file, 'utf8')) as DatasetManifest;
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw new DataError(missing ? 'dataset manifest not found' : `dataset manifest is not valid JSON: ${(e as Error).message}`, {
      code: missing ? 'DATA_NOT_FOUND' : 'DATA_CORRUPT',
      file,
    });
  }
  if (m.format !== DATASET_FORMAT || m.version !== DATASET_VERSION) {
    throw new DataError(`not a ${DATASET_FORMAT} v${DATASET_VERSION} manifest (format ${String(m.format)}, version ${String(m.version)})`, {
      code: 'DATA_UNSUPPORTED',
      file,
    });
  }
  if (!m.splits.train || !m.splits.validation) throw new DataError('dataset has no train or validation split', { code: 'DATA_CORRUPT', file });
  return m;
}

/** Reads a dataset folder, checking each file's size and SHA-256 against the manifest. */
export async function readDataset(dir: string, opts: { splits?: SplitName[] } = {}): Promise<Dataset> {
  const m = await readDatasetManifest(dir);
  const want = opts.splits ?? [...SPLIT_NAMES];
  const splits: Partial<Record<SplitName, DatasetSplit>> = {};
  for (const name of want) {
    const s = m.splits[name];
    if (!s) continue;
    const x = await readBin(dir, s.x);
    const y = (await readBin(dir, s.y)) as Uint8Array;
    for (let i = 0; i < y.length; i++) {
      if (y[i]! >= m.numClasses)
        throw new DataError(`label ${y[i]} at ${i} is outside 0..${m.numClasses - 1}`, { code: 'DATA_CORRUPT', file: path.join(dir, s.y.name) });
    }
    splits[name] = { count: s.count, x, y };
  }
  if (want.includes('train') && !splits.train)
    throw new DataError('dataset has no train split', { code: 'DATA_CORRUPT', file: path.join(dir, 'manifest.json') });
  const empty: DatasetSplit = { count: 0, x: new Float32Array(0), y: new Uint8Array(0) };
  return {
    featureShape: m.featureShape,
    numClasses: m.numClasses,
    normalization: m.normalization,
    ...(m.inputRange ? { inputRange: m.inputRange } : {}),
    splits: { ...splits, train: splits.train ?? empty, validation: splits.validation ?? empty },
  };
}

async function writeBin(dir: string, name: string, data: Uint8Array | Float32Array, shape: number[]): Promise<DatasetFileInfo> {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  await writeFile(path.join(dir, name), bytes);
  return { name, dtype: data instanceof Float32Array ? 'float32' : 'uint8', shape, bytes: bytes.length, sha256: sha256(bytes) };
}

async function readBin(dir: string, info: DatasetFileInfo): Promise<Uint8Array | Float32Array> {
  const file = path.join(dir, info.name);
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch {
    throw new DataError('dataset file is missing', { code: 'DATA_NOT_FOUND', file });
  }
  if (buf.length !== info.bytes) throw new DataError(`has ${buf.length} bytes, manifest says ${info.bytes}`, { code: 'DATA_CORRUPT', file });
  if (sha256(buf) !== info.sha256) throw new DataError('SHA-256 does not match the manifest', { code: 'DATA_CORRUPT', file });
  const copy = new Uint8Array(buf.length);
  copy.set(buf);
  return info.dtype === 'float32' ? new Float32Array(copy.buffer) : copy;
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function toFloat(x: Uint8Array | Float32Array): Float32Array {
  return x instanceof Float32Array ? x : Float32Array.from(x);
}

function columnStats(x: Float32Array, cols: number): { mean: number[]; std: number[] } {
  const rows = x.length / cols;
  const mean = new Array<number>(cols).fill(0);
  const sq = new Array<number>(cols).fill(0);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) mean[c]! += x[r * cols + c]!;
  for (let c = 0; c < cols; c++) mean[c] = rows ? mean[c]! / rows : 0;
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) sq[c]! += (x[r * cols + c]! - mean[c]!) ** 2;
  const std = sq.map((s) => Math.sqrt(rows ? s / rows : 0) || 1);
  return { mean, std };
}

function standardise(x: Float32Array, mean: number[], std: number[]): Float32Array {
  const cols = mean.length;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (x[i]! - mean[i % cols]!) / std[i % cols]!;
  return out;
}
