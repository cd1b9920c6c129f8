// Writing and copying ONNX model folders: model.onnx + capstan-model.json.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { TFJS_TO_ONNX_PRODUCER, TFJS_TO_ONNX_VERSION, tfjsToOnnx } from './from-tfjs.js';
import { ONNX_META_FILE, ONNX_MODEL_FILE, readOnnxMeta, writeOnnxMeta, type InputEncodingMeta, type OnnxModelMeta } from './meta.js';

export interface OnnxExportOptions {
  quantize?: 'none' | 'uint8';
  /** How raw values become the model's inputs (from the dataset's normalisation); default none. */
  encoding?: InputEncodingMeta;
  /** Class names in class order; default "0", "1", …. */
  labels?: string[];
}

/** Converts a tfjs layers model into an ONNX model folder in `destDir`; returns what capstan-model.json says. */
export async function exportOnnxFolder(model: TF.LayersModel, destDir: string, opts: OnnxExportOptions = {}): Promise<OnnxModelMeta> {
  const quantization = opts.quantize ?? 'none';
  const g = tfjsToOnnx(model, { quantize: quantization });
  const labels = opts.labels ?? Array.from({ length: g.numClasses }, (_, i) => String(i));
  if (labels.length !== g.numClasses) throw new Error(`${labels.length} labels for a model of ${g.numClasses} classes`);
  const meta: OnnxModelMeta = {
    format: 'onnx',
    metaVersion: 1,
    file: ONNX_MODEL_FILE,
    opset: g.opset,
    producer: `${TFJS_TO_ONNX_PRODUCER} ${TFJS_TO_ONNX_VERSION}`,
    input: { name: g.inputName, shape: [null, ...g.sampleShape], dtype: 'float32', encoding: opts.encoding ?? { kind: 'none' } },
    output: { name: g.outputName, kind: g.outputKind },
    labels,
    quantization,
  };
  await mkdir(destDir, { recursive: true });
  await writeFile(path.join(destDir, ONNX_MODEL_FILE), g.bytes);
  await writeOnnxMeta(destDir, meta);
  return meta;
}

/** Copies an ONNX model folder (its checked capstan-model.json and model.onnx, nothing else). */
export async function copyOnnxFolder(sourceDir: string, destDir: string): Promise<OnnxModelMeta> {
  const meta = await readOnnxMeta(sourceDir);
  await mkdir(destDir, { recursive: true });
  await copyFile(path.join(sourceDir, meta.file), path.join(destDir, meta.file));
  await copyFile(path.join(sourceDir, ONNX_META_FILE), path.join(destDir, ONNX_META_FILE));
  return meta;
}
