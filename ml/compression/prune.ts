import type * as TF from '@tensorflow/tfjs';
import { DataError } from '../data/data-error.js';
import { folderSaveHandler } from '../models/io.js';
import { writeMasks } from './masks.js';
import {
  countZeros,
  decodeFloatWeights,
  encodeFloatWeights,
  pruneWeights,
  quantizeWeights,
  type FloatWeight,
  type ModelArtifacts,
  type QuantizeDtype,
  type WeightMask,
} from './weights.js';

export interface PrunedModel {
  /** The float32 weights with the pruned values set to zero, in manifest order. */
  weights: FloatWeight[];
  masks: WeightMask[];
  /** Bytes of the float32 weights before pruning. */
  weightBytes: number;
  /** Zeros and elements over the prunable weights. */
  zeros: number;
  total: number;
}

/**
 * Magnitude-prunes every kernel of a float32 model to `sparsity`. A model that is already
 * quantized, or has nothing to prune, is refused with a DataError (MODEL_UNSUPPORTED).
 */
export function pruneModel(model: ModelArtifacts, sparsity: number): PrunedModel {
  let weights: FloatWeight[];
  try {
    weights = decodeFloatWeights(model);
  } catch (e) {
    throw new DataError(`input model: ${(e as Error).message}`, { code: 'MODEL_UNSUPPORTED' });
  }
  const weightBytes = weights.reduce((n, w) => n + w.values.byteLength, 0);
  const masks = pruneWeights(weights, sparsity);
  if (masks.length === 0 && sparsity > 0)
    throw new DataError('the model has no kernel weights to prune (only dense/conv kernels are pruned)', { code: 'MODEL_UNSUPPORTED' });
  const { zeros, total } = countZeros(weights);
  return { weights, masks, weightBytes, zeros, total };
}

/** The weights as stored: float32, or quantized (tfjs weight-manifest `quantization`). */
export function encodeWeights(
  weights: FloatWeight[],
  quantize: QuantizeDtype | 'none',
): { weightSpecs: TF.io.WeightsManifestEntry[]; weightData: ArrayBuffer } {
  return quantize === 'none' ? encodeFloatWeights(weights) : quantizeWeights(weights, quantize);
}

/**
 * Writes a model folder: the topology of `base` with `weights` (encoded by encodeWeights),
 * the masks beside it when there are any, and `metadata` merged into `userDefinedMetadata`.
 */
export async function saveCompressedModel(
  dir: string,
  base: ModelArtifacts,
  weights: { weightSpecs: TF.io.WeightsManifestEntry[]; weightData: ArrayBuffer },
  masks: WeightMask[],
  metadata?: Record<string, unknown>,
): Promise<void> {
  const artifacts: ModelArtifacts = { ...base, ...weights, generatedBy: base.generatedBy ?? 'capstan' };
  if (metadata) artifacts.userDefinedMetadata = { ...base.userDefinedMetadata, ...(metadata as NonNullable<ModelArtifacts['userDefinedMetadata']>) };
  await folderSaveHandler(dir).save!(artifacts);
  if (masks.length) await writeMasks(dir, masks);
}

/** Exact zeros a live model holds in the named weights (after tfjs dequantized them). */
export function countLiveZeros(model: TF.LayersModel, names: Set<string>): number {
  let zeros = 0;
  for (const w of model.weights) {
    if (!names.has(w.originalName)) continue;
    for (const v of w.read().dataSync()) if (v === 0) zeros++;
  }
  return zeros;
}
