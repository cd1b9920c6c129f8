import { z } from 'zod';

export const multiDeviceFitParamsSchema = z.object({
  /** Data-parallel replicas: one device each (a GPU, or a CPU core as its own process). */
  replicas: z.number().int().min(1).max(64).default(2),
  epochs: z.number().int().min(1).max(1000).default(1),
  batchSize: z.number().int().min(1).max(65536).default(32),
  learningRate: z.number().positive().max(10).default(1e-3),
  /** Local SGD: each replica takes this many steps on its shard, then weights are averaged. */
  syncEverySteps: z.number().int().min(1).max(100_000).default(50),
  seed: z.number().int().min(0).default(42),
  /** How long a replica waits for the others at a sync point before failing (retryably). */
  syncTimeoutMs: z
    .number()
    .int()
    .min(1000)
    .default(10 * 60_000),
});

export type MultiDeviceFitParams = z.infer<typeof multiDeviceFitParamsSchema>;

/** What each replica heartbeats, and gets back as `lastCheckpoint` when retried. */
export const replicaCheckpointSchema = z.object({ round: z.number().int().min(0), checkpoint: z.string().optional() });
