import type * as TF from '@tensorflow/tfjs';
import type { WeightMask } from './weights.js';

/** Keeps pruned weights of a live model at zero: `apply()` sets weight ← weight × mask. */
export interface MaskApplier {
  apply(): void;
  dispose(): void;
}

/** Matches masks to the model's weights by manifest name (LayerVariable.originalName). */
export function createMaskApplier(tf: typeof TF, model: TF.LayersModel, masks: WeightMask[]): MaskApplier {
  const pairs = masks.map((m) => {
    const v = model.weights.find((w) => w.originalName === m.name);
    if (!v) throw new Error(`mask ${m.name} matches no weight of the model (weights: ${model.weights.map((w) => w.originalName).join(', ')})`);
    return { v, mask: tf.tensor(Float32Array.from(m.keep), m.shape, 'float32') };
  });
  return {
    apply() {
      tf.tidy(() => {
        for (const { v, mask } of pairs) v.write(tf.mul(v.read(), mask));
      });
    },
    dispose() {
      for (const { mask } of pairs) mask.dispose();
    },
  };
}
