// Pruning masks stored beside model.json, so a later fine-tune (e.g. core:multi-device-fit) keeps
// pruned weights at zero: after each step, weight ← weight × mask.
//   masks.json  { format: 'capstan-masks/1', file: 'masks.bin', dtype: 'uint8', sparsity, masks: [{ name, shape, offset, length, kept, dtype }] }
//   (offset and length count elements = bytes; read by ml/training/weights.ts readMasks for multi-device fit)
//   masks.bin   the masks one after another, one byte per weight element (1 = kept, 0 = pruned)
// `name` is the weight's name in the model.json weight manifest (LayerVariable.originalName).
import { access, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { WeightMask } from './weights.js';

export const MASKS_JSON = 'masks.json';
export const MASKS_BIN = 'masks.bin';
export const MASKS_FORMAT = 'capstan-masks/1';

export interface MasksFile {
  format: typeof MASKS_FORMAT;
  file: string;
  dtype: 'uint8';
  /** Pruned fraction over all masked elements. */
  sparsity: number;
  masks: { name: string; shape: number[]; offset: number; length: number; kept: number; dtype: 'uint8' }[];
}

export async function writeMasks(dir: string, masks: WeightMask[]): Promise<MasksFile> {
  const total = masks.reduce((n, m) => n + m.keep.length, 0);
  const bin = new Uint8Array(total);
  const entries: MasksFile['masks'] = [];
  let off = 0;
  let kept = 0;
  for (const m of masks) {
    bin.set(m.keep, off);
    const k = m.keep.reduce((a, b) => a + b, 0);
    kept += k;
    entries.push({ name: m.name, shape: m.shape, offset: off, length: m.keep.length, kept: k, dtype: 'uint8' });
    off += m.keep.length;
  }
  const file: MasksFile = { format: MASKS_FORMAT, file: MASKS_BIN, dtype: 'uint8', sparsity: total ? (total - kept) / total : 0, masks: entries };
  await writeFile(path.join(dir, MASKS_BIN), bin);
  await writeFile(path.join(dir, MASKS_JSON), JSON.stringify(file, null, 2));
  return file;
}

/** Reads the masks of a model folder; `null` when the folder has none (an unpruned model). */
export async function readMasks(dir: string): Promise<WeightMask[] | null> {
  try {
    await access(path.join(dir, MASKS_JSON));
  } catch {
    return null;
  }
  const file = JSON.parse(await readFile(path.join(dir, MASKS_JSON), 'utf8')) as MasksFile;
  if (file.format !== MASKS_FORMAT) throw new Error(`${path.join(dir, MASKS_JSON)}: unknown mask format ${String(file.format)}`);
  const bin = new Uint8Array(await readFile(path.join(dir, path.basename(file.file))));
  return file.masks.map((m) => {
    if (m.offset + m.length > bin.length) throw new Error(`${MASKS_BIN} is shorter than ${MASKS_JSON} says (at ${m.name})`);
    return { name: m.name, shape: m.shape, keep: bin.slice(m.offset, m.offset + m.length) };
  });
}
