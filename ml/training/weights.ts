import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import type { Tf } from '../models/mlp.js';

export interface WeightLayout {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

/** The trainable and non-trainable weights of a model as one flat float32 array, in getWeights() order. */
export function flatWeights(model: TF.LayersModel): { flat: Float32Array; layout: WeightLayout[] } {
  const layout: WeightLayout[] = [];
  let total = 0;
  for (const w of model.weights) {
    const size = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
    layout.push({ name: w.originalName, shape: w.shape.map((d) => d ?? 1), offset: total, size });
    total += size;
  }
  const flat = new Float32Array(total);
  const values = model.getWeights();
  values.forEach((t, i) => flat.set(t.dataSync() as Float32Array, layout[i]!.offset));
  return { flat, layout };
}

export function setFlatWeights(tf: Tf, model: TF.LayersModel, flat: Float32Array): void {
  const ts = model.weights.map((w) => w.shape.map((d) => d ?? 1));
  let off = 0;
  const tensors = ts.map((shape) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const t = tf.tensor(flat.subarray(off, off + size), shape, 'float32');
    off += size;
    return t;
  });
  if (off !== flat.length) throw new Error(`weight vector has ${flat.length} values, the model needs ${off}`);
  model.setWeights(tensors);
  tensors.forEach((t) => t.dispose());
}

/** Element-wise mean, summed in the given order (so every replica computes the same bits). */
export function meanOf(vectors: Float32Array[]): Float32Array {
  const first = vectors[0];
  if (!first) throw new Error('meanOf needs at least one vector');
  const out = new Float64Array(first.length);
  for (const v of vectors) {
    if (v.length !== first.length) throw new Error(`cannot average weight vectors of lengths ${first.length} and ${v.length}`);
    for (let i = 0; i < v.length; i++) out[i]! += v[i]!;
  }
  const res = new Float32Array(first.length);
  for (let i = 0; i < res.length; i++) res[i] = out[i]! / vectors.length;
  return res;
}

export function applyMask(flat: Float32Array, mask: Float32Array | undefined): void {
  if (!mask) return;
  for (let i = 0; i < flat.length; i++) if (mask[i] === 0) flat[i] = 0;
}

export interface MaskEntry {
  name: string;
  shape: number[];
  /** Element offset in masks.bin; defaults to right after the previous entry. */
  offset?: number;
  dtype?: 'uint8' | 'bool' | 'float32';
}

/**
 * Reads pruning masks beside a model (`masks.json` + `masks.bin`), aligned to `layout`.
 * masks.json (core:prune-quantize's `capstan-masks/1`): `{ "file"?: "masks.bin", "masks": [{ "name": "dense_1/kernel",
 * "shape": [784,128], "offset"?: n, "dtype"?: "uint8" }] }`
 * (a bare array of entries works too); masks.bin holds the values in that order
 * (uint8/bool: 0 = pruned; float32: 0.0 = pruned). Weights without a mask are kept.
 * Returns undefined when the folder has no masks.
 */
export async function readMasks(modelDir: string, layout: WeightLayout[]): Promise<{ mask: Float32Array; masked: number; pruned: number } | undefined> {
  let json: unknown;
  let bin: Buffer;
  try {
    json = JSON.parse(await readFile(path.join(modelDir, 'masks.json'), 'utf8'));
    const binName = (json as { file?: unknown }).file;
    bin = await readFile(path.join(modelDir, typeof binName === 'string' ? path.basename(binName) : 'masks.bin'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const entries = (Array.isArray(json) ? json : ((json as { masks?: unknown; weights?: unknown }).masks ?? (json as { weights?: unknown }).weights)) as
    | MaskEntry[]
    | undefined;
  if (!Array.isArray(entries)) throw new Error(`${path.join(modelDir, 'masks.json')}: expected { masks: [...] }`);
  const total = layout.reduce((n, l) => n + l.size, 0);
  const mask = new Float32Array(total).fill(1);
  let cursor = 0;
  let masked = 0;
  let pruned = 0;
  for (const e of entries) {
    const target = layout.find((l) => l.name === e.name || l.name.endsWith(`/${e.name}`) || e.name.endsWith(`/${l.name}`));
    const size = e.shape.reduce((a, b) => a * b, 1);
    const dtype = e.dtype ?? 'uint8';
    const width = dtype === 'float32' ? 4 : 1;
    const start = e.offset ?? cursor;
    cursor = start + size;
    if (!target) throw new Error(`${path.join(modelDir, 'masks.json')}: mask for unknown weight ${e.name}`);
    if (target.size !== size) throw new Error(`${path.join(modelDir, 'masks.json')}: mask ${e.name} has ${size} values, the weight has ${target.size}`);
    if ((start + size) * width > bin.length) throw new Error(`${path.join(modelDir, 'masks.bin')}: too short for mask ${e.name}`);
    for (let i = 0; i < size; i++) {
      const v = width === 4 ? bin.readFloatLE((start + i) * 4) : bin[start + i]!;
      const keep = v === 0 ? 0 : 1;
      mask[target.offset + i] = keep;
      if (!keep) pruned++;
    }
    masked += size;
  }
  return { mask, masked, pruned };
}
