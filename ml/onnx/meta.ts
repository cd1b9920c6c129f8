// `capstan-model.json`: what an ONNX model folder says about itself beside `model.onnx` — the
// format, the opset, the graph's input and output, how inputs are encoded, the class labels and
// how the weights are stored. Written by Capstan's exporters (and by the Python SDK's), read and
// checked (zod) by everything that loads the folder. docs/onnx-models.md documents it.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { DataError } from '../data/data-error.js';

export const ONNX_META_FILE = 'capstan-model.json';
export const ONNX_MODEL_FILE = 'model.onnx';

/** How raw values become the model's inputs (what data prep did to the training data). */
export const inputEncodingSchema = z.discriminatedUnion('kind', [
  /** Inputs are taken as they come. */
  z.object({ kind: z.literal('none') }).strict(),
  /** input = raw × scale, e.g. pixels 0–255 × 1/255. */
  z.object({ kind: z.literal('scale'), scale: z.number().positive(), rawRange: z.tuple([z.number(), z.number()]).optional() }).strict(),
  /** input = (raw − mean[i]) / std[i] per feature (flattened sample order). */
  z.object({ kind: z.literal('zscore'), mean: z.array(z.number()), std: z.array(z.number().positive()) }).strict(),
]);
export type InputEncodingMeta = z.infer<typeof inputEncodingSchema>;

export const onnxModelMetaSchema = z
  .object({
    format: z.literal('onnx'),
    /** Version of this file's layout. */
    metaVersion: z.literal(1),
    /** The ONNX file in the folder. */
    file: z.literal(ONNX_MODEL_FILE).default(ONNX_MODEL_FILE),
    /** The default-domain opset the graph imports, e.g. 13. */
    opset: z.number().int().min(7),
    /** What wrote the graph, e.g. "capstan tfjs-to-onnx 1", "tf2onnx 1.16.1", "keras 3.10.0". */
    producer: z.string().min(1),
    input: z
      .object({
        /** The graph input's name. */
        name: z.string().min(1),
        /** Its shape with the batch dimension first as null: [null, 28, 28] or [null, 784]. */
        shape: z.array(z.number().int().positive().nullable()).min(2),
        dtype: z.literal('float32'),
        encoding: inputEncodingSchema.default({ kind: 'none' }),
      })
      .strict()
      .refine((i) => i.shape[0] === null && i.shape.slice(1).every((d) => d !== null), {
        message: 'the batch dimension first as null, every other dimension a size (e.g. [null, 28, 28])',
        path: ['shape'],
      }),
    output: z
      .object({
        /** The graph output read for predictions. */
        name: z.string().min(1),
        /** `probabilities` (a softmax at the end of the graph) or `logits` (the server applies the softmax). */
        kind: z.enum(['probabilities', 'logits']),
      })
      .strict(),
    /** Class names in class order (index = label). */
    labels: z.array(z.string()).min(1),
    /** How the weights are stored: `uint8` = weights as uint8 with a scale and zero point, dequantized in the graph (DequantizeLinear). */
    quantization: z.enum(['none', 'uint8']),
  })
  .strict();
export type OnnxModelMeta = z.infer<typeof onnxModelMetaSchema>;

/** Reads and checks a folder's `capstan-model.json` (DataError MODEL_META_INVALID when it is not one). */
export async function readOnnxMeta(dir: string): Promise<OnnxModelMeta> {
  const file = path.join(dir, ONNX_META_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new DataError(`${ONNX_META_FILE} cannot be read as JSON: ${(e as Error).message}`, { code: 'MODEL_META_INVALID' });
  }
  const r = onnxModelMetaSchema.safeParse(raw);
  if (!r.success) {
    const what = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new DataError(`${ONNX_META_FILE} is not a Capstan ONNX model description: ${what}`, { code: 'MODEL_META_INVALID' });
  }
  return r.data;
}

export async function writeOnnxMeta(dir: string, meta: OnnxModelMeta): Promise<void> {
  await writeFile(path.join(dir, ONNX_META_FILE), `${JSON.stringify(onnxModelMetaSchema.parse(meta), null, 2)}\n`);
}
