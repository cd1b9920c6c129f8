import { z } from 'zod';

export const modelArchSchema = z.object({
  /** Units of each hidden dense layer; the seed model is [128]. */
  hiddenUnits: z.array(z.number().int().positive().max(8192)).min(1).max(8).default([128]),
  activation: z.enum(['relu', 'tanh', 'sigmoid', 'elu']).default('relu'),
  dropout: z.number().min(0).max(0.9).default(0),
});

export const pretrainParamsSchema = z.object({
  model: modelArchSchema.default({ hiddenUnits: [128], activation: 'relu', dropout: 0 }),
  epochs: z.number().int().min(1).max(1000).default(10),
  batchSize: z.number().int().min(1).max(65536).default(32),
  learningRate: z.number().positive().max(10).default(1e-3),
  seed: z.number().int().min(0).default(42),
});

export type PretrainParams = z.infer<typeof pretrainParamsSchema>;

/** What pretrain heartbeats, and gets back as `lastCheckpoint` on a retry. */
export const pretrainCheckpointSchema = z.object({ epoch: z.number().int().min(0), checkpoint: z.string().min(1) });
export type PretrainCheckpoint = z.infer<typeof pretrainCheckpointSchema>;
