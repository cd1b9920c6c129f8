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

/** The ceiling on a model's trainable parameters when the host sets none (CAPSTAN_MAX_MODEL_PARAMETERS). */
export const DEFAULT_MAX_MODEL_PARAMETERS = 50_000_000;

/** What validation assumes of the dataset before it exists: MNIST-sized rows (28×28, one channel) and 10 classes. The stage checks again with the real shape before it trains. */
export const NOMINAL_DATASET = { featureShape: [28, 28], numClasses: 10 } as const;

type ModelArch = z.infer<typeof modelArchSchema>;

/**
 * Trainable parameters of the model pretrain builds for this architecture and dataset shape, as
 * ml/models (buildMlp, buildFromLayers) build it: weights and biases of each conv2d and dense
 * layer and of the softmax output. Pure, so it runs at validation without TensorFlow.js.
 */
export function modelParameters(model: ModelArch, data: { featureShape: readonly number[]; numClasses: number }): number {
  const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  if (!model.layers) {
    const dims = [size([...data.featureShape]), ...model.hiddenUnits, data.numClasses];
    return dims.slice(1).reduce((n, units, i) => n + dims[i]! * units + units, 0);
  }
  const image = model.layers.some((l) => l.type === 'conv2d' || l.type === 'maxPooling2d');
  let shape = image && data.featureShape.length === 2 ? [data.featureShape[0]!, data.featureShape[1]!, 1] : [...data.featureShape];
  // A spatial size below 1 fails when the model is built; here it counts as 1 (the count stays a lower bound).
  const out = (n: number, k: number, stride: number, padding: 'same' | 'valid') =>
    Math.max(1, padding === 'same' ? Math.ceil(n / stride) : Math.floor((n - k) / stride) + 1);
  let n = 0;
  for (const l of model.layers) {
    if (l.type === 'conv2d') {
      n += l.kernelSize * l.kernelSize * (shape[2] ?? 1) * l.filters + l.filters;
      shape = [out(shape[0] ?? 1, l.kernelSize, l.strides, l.padding), out(shape[1] ?? 1, l.kernelSize, l.strides, l.padding), l.filters];
    } else if (l.type === 'maxPooling2d') {
      const stride = l.strides ?? l.poolSize;
      shape = [out(shape[0] ?? 1, l.poolSize, stride, 'valid'), out(shape[1] ?? 1, l.poolSize, stride, 'valid'), shape[2] ?? 1];
    } else if (l.type === 'dense') {
      n += size(shape) * l.units + l.units;
      shape = [l.units];
    }
  }
  return n + size(shape) * data.numClasses + data.numClasses;
}

/** `123456789` → `123,456,789` (the same in every locale). */
export function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** Why a model is refused: it has more parameters than the ceiling; undefined when it fits. */
export function parameterCeilingProblem(model: ModelArch, data: { featureShape: readonly number[]; numClasses: number }, max: number): string | undefined {
  const n = modelParameters(model, data);
  if (n <= max) return undefined;
  return `the model has ${formatCount(n)} trainable parameters for ${data.featureShape.join('×')} inputs and ${data.numClasses} classes; this host's ceiling is ${formatCount(max)} (CAPSTAN_MAX_MODEL_PARAMETERS)`;
}

/**
 * The params schema with the host's ceiling on model size: a model larger than `maxParameters`
 * for MNIST-sized data is refused at validation (so startPipeline, validatePipeline and retryStage
 * refuse it before anything runs); the stage checks again with the dataset's real shape.
 */
export function pretrainParamsSchemaFor(opts: { maxParameters?: number } = {}) {
  const max = opts.maxParameters ?? DEFAULT_MAX_MODEL_PARAMETERS;
  return pretrainParamsSchema.superRefine((p, ctx) => {
    const problem = parameterCeilingProblem(p.model, NOMINAL_DATASET, max);
    if (problem) ctx.addIssue({ code: 'custom', path: ['model'], message: problem, params: { code: 'RESOURCE_CEILING' } });
  });
}

/** What pretrain heartbeats, and gets back as `lastCheckpoint` on a retry. */
export const pretrainCheckpointSchema = z.object({ epoch: z.number().int().min(0), checkpoint: z.string().min(1) });
export type PretrainCheckpoint = z.infer<typeof pretrainCheckpointSchema>;
