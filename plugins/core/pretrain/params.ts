import { z } from 'zod';
import { layerOrderProblems } from '../../../ml/models/layers.js';

const activation = z.enum(['relu', 'tanh', 'sigmoid', 'elu', 'linear']);

/** One hidden layer (ml/models/layers.ts builds them; the dense softmax output is always added). */
export const layerSpecSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('conv2d'),
      filters: z.number().int().min(1).max(1024),
      kernelSize: z.number().int().min(1).max(15),
      strides: z.number().int().min(1).max(8).default(1),
      padding: z.enum(['same', 'valid']).default('valid'),
      activation: activation.default('relu'),
    })
    .strict(),
  z
    .object({
      type: z.literal('maxPooling2d'),
      poolSize: z.number().int().min(1).max(8).default(2),
      /** Default: the pool size. */
      strides: z.number().int().min(1).max(8).optional(),
    })
    .strict(),
  z.object({ type: z.literal('flatten') }).strict(),
  z.object({ type: z.literal('dense'), units: z.number().int().positive().max(8192), activation: activation.default('relu') }).strict(),
  z.object({ type: z.literal('dropout'), rate: z.number().min(0).max(0.9) }).strict(),
]);
export type LayerSpecParams = z.infer<typeof layerSpecSchema>;

export const modelArchSchema = z
  .object({
    /** Units of each hidden dense layer; the seed model is [128]. */
    hiddenUnits: z.array(z.number().int().positive().max(8192)).min(1).max(8).default([128]),
    activation: z.enum(['relu', 'tanh', 'sigmoid', 'elu']).default('relu'),
    dropout: z.number().min(0).max(0.9).default(0),
    /**
     * Instead of the MLP above: the hidden layers in order, e.g. a small conv net
     * `[{ type: conv2d, filters: 16, kernelSize: 3 }, { type: maxPooling2d }, { type: dense, units: 64 }]`.
     * A flatten goes before the first dense layer unless given; the output layer (dense softmax
     * over the dataset's classes) is always added. Absent: the MLP, exactly as before.
     */
    layers: z.array(layerSpecSchema).min(1).max(32).optional(),
  })
  .superRefine((m, ctx) => {
    if (!m.layers) return;
    if (m.hiddenUnits.length !== 1 || m.hiddenUnits[0] !== 128 || m.activation !== 'relu' || m.dropout !== 0) {
      ctx.addIssue({ code: 'custom', path: ['layers'], message: 'layers replaces hiddenUnits, activation and dropout: give either layers or those, not both' });
    }
    for (const p of layerOrderProblems(m.layers)) ctx.addIssue({ code: 'custom', path: ['layers', p.index], message: p.message });
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
