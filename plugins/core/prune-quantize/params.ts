import { z } from 'zod';

export const pruneQuantizeParamsSchema = z
  .object({
    /** Fraction of each kernel's weights set to zero (smallest magnitudes first). */
    sparsity: z.number().min(0).max(0.99).default(0.5),
    /** Epochs of fine-tuning after pruning (pruned weights stay zero). 0 = none. */
    fineTuneEpochs: z.number().int().min(0).max(100).default(0),
    /**
     * How the sparsity is reached when there is a fine-tune. 'gradual' (the default): from 0 to
     * `sparsity` over the fine-tune's steps on a cubic schedule (Zhu & Gupta 2017; TF Model
     * Optimization's PolynomialDecay), masks recomputed by magnitude every `pruningFrequency` steps,
     * the target reached at `pruningEndFraction` of the steps and held for the rest. 'oneshot': pruned
     * to `sparsity` at once, then fine-tuned with fixed masks (the behaviour before 1.2.0). Without a
     * fine-tune the pruning is one-shot either way.
     */
    schedule: z.enum(['gradual', 'oneshot']).default('gradual'),
    /** Gradual pruning: fine-tune steps between two mask updates (TF MOT's default is 100). */
    pruningFrequency: z.number().int().min(1).max(100_000).default(100),
    /** Gradual pruning: the fraction of the fine-tune steps by which the target sparsity is reached. */
    pruningEndFraction: z.number().gt(0).max(1).default(0.75),
    /** Seeds the fine-tune's shuffle of each epoch. */
    seed: z.number().int().min(0).default(42),
    /** Use at most this many training rows for fine-tuning. */
    fineTuneSamples: z.number().int().positive().optional(),
    batchSize: z.number().int().positive().max(4096).default(64),
    learningRate: z.number().positive().max(1).default(0.001),
    /** Post-training weight quantization; 'none' keeps float32. */
    quantize: z.enum(['none', 'uint8', 'uint16', 'float16']).default('uint8'),
    /** Measure test accuracy on at most this many rows. */
    evalSamples: z.number().int().positive().optional(),
  })
  .strict();
export type PruneQuantizeParams = z.infer<typeof pruneQuantizeParamsSchema>;

/** What the fine-tune heartbeats (epochs finished, steps, newest checkpoint), and gets back as `lastCheckpoint` on a retry. */
export const fineTuneCheckpointSchema = z.object({
  phase: z.literal('fine-tune'),
  epoch: z.number().int().min(0),
  step: z.number().int().min(0),
  checkpoint: z.string().min(1).optional(),
});
export type FineTuneCheckpoint = z.infer<typeof fineTuneCheckpointSchema>;
