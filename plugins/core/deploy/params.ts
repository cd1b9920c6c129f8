import { z } from 'zod';
import { MODEL_FORMATS } from '../../../ml/runtime/loaded-model.js';
import { MODEL_NAME_RE, PRODUCTION_ALIAS } from '../../../serving/registry.js';

export const promotionGatesSchema = z
  .object({
    /** Test accuracy (0..1) the new version must reach. */
    minTestAccuracy: z.number().min(0).max(1).optional(),
    /** p99 latency of one prediction at batch 1, in milliseconds. */
    maxP99LatencyMs: z.number().positive().optional(),
    /** Size of the exported folder (model.json + weights), in bytes. */
    maxSizeBytes: z.number().int().positive().optional(),
    /**
     * Champion/challenger: the new version's test accuracy must be at least the current production
     * version's, measured on the same test set in the same stage, minus `tolerance`. Passes when
     * there is no production version yet.
     */
    noWorseThan: z.literal('production').optional(),
    /** How far (accuracy as a fraction 0..1: 0.005 = half a percentage point) the new version may be below production. Default 0. */
    tolerance: z.number().min(0).max(1).optional(),
  })
  .strict()
  .refine((g) => g.tolerance === undefined || g.noWorseThan !== undefined, {
    message: 'tolerance applies to noWorseThan: set noWorseThan: production too',
    path: ['tolerance'],
  });

/** Whether any promotion gate is set (`tolerance` alone is not a gate). */
export function hasGates(g: PromotionGates): boolean {
  return g.minTestAccuracy !== undefined || g.maxP99LatencyMs !== undefined || g.maxSizeBytes !== undefined || g.noWorseThan !== undefined;
}
export type PromotionGates = z.infer<typeof promotionGatesSchema>;

export const deployParamsSchema = z
  .object({
    /** Registry name of the model; defaults to the pipeline name. */
    modelName: z.string().regex(MODEL_NAME_RE, 'model name: letters, digits, ".", "_", "-" (max 64), starting with a letter or digit').optional(),
    gates: promotionGatesSchema.default({}),
    /** Point `alias` at the new version when all gates pass. */
    promote: z.boolean().default(true),
    alias: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,31}$/)
      .default(PRODUCTION_ALIAS),
    /** Predictions timed at batch 1 for p50/p99 (after 10 warm-up runs). */
    latencyRuns: z.number().int().min(10).max(100_000).default(200),
    /** Measure test accuracy on at most this many rows. */
    evalSamples: z.number().int().positive().optional(),
    /**
     * Quantize float32 weights while exporting (the weight-manifest format prune-quantize writes).
     * For pipelines where a fine-tune after prune-quantize wrote float32 weights again.
     * An input that is already quantized is exported as it is.
     */
    quantize: z.enum(['none', 'uint8', 'uint16', 'float16']).default('none'),
    /**
     * The format to register: `tfjs-layers` or `onnx`. Default: the input model's format (a tfjs
     * layers folder, or an ONNX folder with model.onnx + capstan-model.json). `onnx` with a tfjs
     * input converts it (Dense, Conv2D, MaxPooling2D, Flatten, Reshape stacks; opset 13).
     */
    format: z.enum(MODEL_FORMATS).optional(),
  })
  .strict()
  .refine((p) => p.format !== 'onnx' || p.quantize === 'none' || p.quantize === 'uint8', {
    message: 'ONNX models are quantized to uint8 or not at all: use quantize none or uint8 with format onnx',
    path: ['quantize'],
  });
export type DeployParams = z.infer<typeof deployParamsSchema>;
