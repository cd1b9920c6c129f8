import { inputRangeOf, readDataset, readDatasetManifest } from '../../../ml/data/dataset.js';
import type { InputSpec } from '../../../serving/registry.js';

/**
 * The input spec of a model trained on a dataset folder, from data prep's normalisation:
 * pixels scaled from 0–255 accept [0, 1] (and raw 0–255 with `encoding: raw`); z-scored features
 * accept the training split's range widened by half its width on each side (and raw feature
 * values, standardised with the recorded mean and std).
 */
export async function inputSpecOf(datasetDir: string): Promise<InputSpec> {
  const m = await readDatasetManifest(datasetDir);
  const shape = m.featureShape;
  const n = m.normalization;
  if (n.kind === 'scale') {
    const hi = 255 * n.factor;
    return {
      shape,
      dtype: 'float32',
      range: [0, hi],
      describe: 'normalised pixels',
      raw: { kind: 'scale', scale: n.factor, rawRange: [0, 255], describe: 'raw 0–255 pixels' },
    };
  }
  let observed = m.inputRange;
  if (!observed) {
    // Datasets written before the range was recorded: measure the training split.
    const ds = await readDataset(datasetDir, { splits: ['train'] });
    observed = inputRangeOf(ds, ds.splits.train);
  }
  const [lo, hi] = observed;
  const slack = Math.max((hi - lo) / 2, 1);
  return {
    shape,
    dtype: 'float32',
    range: [lo - slack, hi + slack],
    describe: 'z-scored features',
    raw: { kind: 'zscore', mean: n.mean, std: n.std, describe: 'raw feature values' },
  };
}
