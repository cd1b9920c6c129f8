import { copyFile, mkdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ArtifactStore } from '../../../lib/artifacts.js';
import { hashTree } from '../../../lib/artifacts.js';
import type { ArtifactRef } from '../../../workflows/types.js';
import type { Tf } from '../../../ml/models/mlp.js';
import { folderLoadHandler, folderSaveHandler } from '../../../ml/models/io.js';
import { decodeFloatWeights, quantizeWeights, type QuantizeDtype } from '../prune-quantize/weights.js';

export interface ExportResult {
  ref: ArtifactRef;
  /** How the exported weights are stored: 'float32' or the quantization dtype. */
  weightFormat: string;
  /** True when this export quantized a float32 model. */
  quantizedHere: boolean;
}

/**
 * Copies a tfjs model folder (model.json + the weight shards its manifest lists; masks and other
 * training leftovers stay behind) to its stable registry location, quantizing float32 weights
 * on the way when `quantize` asks for it:
 * `registry/<model>/sha256-<hash>` — content-addressed, so exporting the same model again (a retry,
 * or another run with identical weights) finds the folder already there and leaves it untouched
 * while a model server may be reading it.
 */
export async function exportModelFolder(
  store: ArtifactStore,
  opts: { model: string; sourceDir: string; stagingKey: string; tf: Tf; quantize?: QuantizeDtype | 'none' },
): Promise<ExportResult> {
  const modelRoot = path.join(store.root, 'registry', opts.model);
  const staging = path.join(modelRoot, `.staging-${opts.stagingKey.replace(/[^A-Za-z0-9._-]/g, '_')}`);
  await store.freshDir(staging);
  try {
    const json = JSON.parse(await readFile(path.join(opts.sourceDir, 'model.json'), 'utf8')) as { weightsManifest?: { paths: string[]; weights: { quantization?: { dtype: string } }[] }[] };
    const specs = (json.weightsManifest ?? []).flatMap((g) => g.weights);
    const stored = specs.find((w) => w.quantization)?.quantization?.dtype ?? 'float32';
    let weightFormat = stored;
    let quantizedHere = false;
    if (opts.quantize && opts.quantize !== 'none' && stored === 'float32') {
      // Post-training quantization at export (e.g. after multi-device fit wrote float32 weights).
      const artifacts = await folderLoadHandler(opts.tf, opts.sourceDir).load!();
      const encoded = quantizeWeights(decodeFloatWeights(artifacts), opts.quantize);
      await folderSaveHandler(staging).save!({ ...artifacts, ...encoded });
      weightFormat = opts.quantize;
      quantizedHere = true;
    }
    const files = quantizedHere ? [] : ['model.json', ...(json.weightsManifest ?? []).flatMap((g) => g.paths)];
    for (const f of files) {
      const src = path.resolve(opts.sourceDir, f);
      if (!src.startsWith(path.resolve(opts.sourceDir) + path.sep)) throw new Error(`weight path ${f} escapes the model folder`);
      const dest = path.join(staging, path.relative(path.resolve(opts.sourceDir), src));
      await mkdir(path.dirname(dest), { recursive: true });
      await copyFile(src, dest);
    }
    const { sha256 } = await hashTree(staging);
    const dest = path.join(modelRoot, `sha256-${sha256}`);
    const already = await stat(dest).then(
      () => true,
      () => false,
    );
    if (already && (await hashTree(dest)).sha256 === sha256) {
      await rm(staging, { recursive: true, force: true });
    } else {
      await store.publish(staging, dest);
    }
    return { ref: await store.seal('model', dest, { format: 'tfjs-layers', weights: weightFormat }), weightFormat, quantizedHere };
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    throw e;
  }
}
