import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import type { Tf } from './mlp.js';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/**
 * A tfjs IO handler that writes the layers format into a folder: `model.json` (topology +
 * weights manifest) and one shard `weights.bin`. tfjs-node's `file://` handler is not
 * available here, so this is what saves models; any tfjs (Node or browser) loads the result.
 * Files are written under temporary names and renamed, `model.json` last.
 */
export function folderSaveHandler(dir: string): TF.io.IOHandler {
  return {
    async save(artifacts: TF.io.ModelArtifacts): Promise<TF.io.SaveResult> {
      await mkdir(dir, { recursive: true });
      const weightData = artifacts.weightData === undefined ? new ArrayBuffer(0) : concat(artifacts.weightData);
      const modelJson: TF.io.ModelJSON = {
        modelTopology: artifacts.modelTopology!,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy ?? 'capstan',
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
        ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
        ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
      };
      const tag = `.${process.pid}.tmp`;
      await writeFile(path.join(dir, WEIGHTS_BIN + tag), new Uint8Array(weightData));
      await rename(path.join(dir, WEIGHTS_BIN + tag), path.join(dir, WEIGHTS_BIN));
      await writeFile(path.join(dir, MODEL_JSON + tag), JSON.stringify(modelJson));
      await rename(path.join(dir, MODEL_JSON + tag), path.join(dir, MODEL_JSON));
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          modelTopologyBytes: JSON.stringify(artifacts.modelTopology).length,
          weightSpecsBytes: JSON.stringify(artifacts.weightSpecs ?? []).length,
          weightDataBytes: weightData.byteLength,
        },
      };
    },
  };
}

/** The matching loader: reads `model.json` and every weight shard it lists (quantized or not). */
export function folderLoadHandler(tf: Tf, dir: string): TF.io.IOHandler {
  return {
    async load(): Promise<TF.io.ModelArtifacts> {
      const modelJson = JSON.parse(await readFile(path.join(dir, MODEL_JSON), 'utf8')) as TF.io.ModelJSON;
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs: TF.io.WeightsManifestEntry[] = [];
        const buffers: ArrayBuffer[] = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const p of group.paths) {
            const b = await readFile(path.join(dir, p));
            buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
          }
        }
        return [specs, concat(buffers)];
      });
    },
  };
}

export async function saveModel(model: TF.LayersModel, dir: string, opts: { includeOptimizer?: boolean } = {}): Promise<void> {
  await model.save(folderSaveHandler(dir), { includeOptimizer: opts.includeOptimizer ?? false });
}

export async function loadModel(tf: Tf, dir: string): Promise<TF.LayersModel> {
  return tf.loadLayersModel(folderLoadHandler(tf, dir));
}

function concat(data: ArrayBuffer | ArrayBuffer[]): ArrayBuffer {
  if (!Array.isArray(data)) return data;
  const total = data.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const b of data) {
    out.set(new Uint8Array(b), off);
    off += b.byteLength;
  }
  return out.buffer;
}
