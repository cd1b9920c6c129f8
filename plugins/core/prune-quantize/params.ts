import { z } from 'zod';

export const pruneQuantizeParamsSchema = z
  .object({
    /** Fraction of each kernel's weights set to zero (smallest magnitudes first). */
    sparsity: z.number().min(0).max(0.99).default(0.5),
    /** Epochs of fine-tuning after pruning (pruned weights stay zero). 0 = none. */
    fineTuneEpochs: z.number().int().min(0).max(100).default(0),
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
