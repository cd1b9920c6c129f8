import { copyFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Tf } from '../models/mlp.js';
import { folderLoadHandler, folderSaveHandler } from '../models/io.js';
import { decodeFloatWeights, quantizeWeights, type QuantizeDtype } from './weights.js';

export interface ExportedModel {
  /** How the exported weights are stored: 'float32' or the quantization dtype. */
  weightFormat: string;
}

/**
 * Copies a tfjs model folder into `destDir`: model.json and the weight shards its manifest lists
 * (masks and other training leftovers stay behind), quantizing float32 weights on the way when
 * `quantize` asks for it (post-training quantization at export, e.g. after a fine-tune wrote
 * float32 weights again). A model that is already quantized is copied as it is.
 */
export async function exportModel(tf: Tf, opts: { sourceDir: string; destDir: string; quantize?: QuantizeDtype | 'none' }): Promise<ExportedModel> {
  const json = JSON.parse(await readFile(path.join(opts.sourceDir, 'model.json'), 'utf8')) as {
    weightsManifest?: { paths: string[]; weights: { quantization?: { dtype: string } }[] }[];
  };
  const specs = (json.weightsManifest ?? []).flatMap((g) => g.weights);
  const stored = specs.find((w) => w.quantization)?.quantization?.dtype ?? 'float32';
  if (opts.quantize && opts.quantize !== 'none' && stored === 'float32') {
    const artifacts = await folderLoadHandler(tf, opts.sourceDir).load!();
    const encoded = quantizeWeights(decodeFloatWeights(artifacts), opts.quantize);
    await folderSaveHandler(opts.destDir).save!({ ...artifacts, ...encoded });
    return { weightFormat: opts.quantize };
  }
  for (const f of ['model.json', ...(json.weightsManifest ?? []).flatMap((g) => g.paths)]) {
    const src = path.resolve(opts.sourceDir, f);
    if (!src.startsWith(path.resolve(opts.sourceDir) + path.sep)) throw new Error(`weight path ${f} escapes the model folder`);
    const dest = path.join(opts.destDir, path.relative(path.resolve(opts.sourceDir), src));
    await mkdir(path.dirname(dest), { recursive: true });
    await copyFile(src, dest);
  }
  return { weightFormat: stored };
}
