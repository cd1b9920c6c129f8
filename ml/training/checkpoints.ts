import { readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { saveModel } from '../models/io.js';

/** Folder name of the checkpoint written after `epoch`. */
export function checkpointName(epoch: number): string {
  return `epoch-${String(epoch).padStart(4, '0')}`;
}

/**
 * Saves the model with its optimizer state as `<dir>/epoch-NNNN` (written aside, then renamed, so a
 * crash never leaves a half checkpoint under the real name) and keeps only the two newest (the
 * newest may be the one a retry resumes from). Returns the checkpoint folder.
 */
export async function writeCheckpoint(model: TF.LayersModel, dir: string, epoch: number): Promise<string> {
  const ckpt = path.join(dir, checkpointName(epoch));
  await saveModel(model, `${ckpt}.tmp`, { includeOptimizer: true });
  await rm(ckpt, { recursive: true, force: true });
  await rename(`${ckpt}.tmp`, ckpt);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    const m = /^epoch-(\d+)$/.exec(n);
    if (m && Number(m[1]) < epoch - 1) await rm(path.join(dir, n), { recursive: true, force: true });
  }
  return ckpt;
}
