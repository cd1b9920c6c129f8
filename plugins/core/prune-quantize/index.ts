export { pruneQuantizeStage, pruneQuantizeParamsSchema, type PruneQuantizeParams } from './plugin.js';
export { readMasks, writeMasks, MASKS_JSON, MASKS_BIN, MASKS_FORMAT, type MasksFile } from './masks.js';
export { createMaskApplier, type MaskApplier } from './apply-masks.js';
export {
  joinWeightData,
  affineQuantize,
  applyMask,
  countZeros,
  decodeFloatWeights,
  encodeFloatWeights,
  isPrunable,
  magnitudePrune,
  pruneWeights,
  quantizeWeights,
  toFloat16Bits,
  type FloatWeight,
  type QuantizeDtype,
  type WeightMask,
} from './weights.js';
