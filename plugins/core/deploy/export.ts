// Writing the deployed model into the registry folder in the format asked for: tfjs layers as it
// is (quantized on the way if asked), a tfjs model converted to ONNX, or an ONNX folder as it is.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { badInput } from '../../../lib/errors.js';
import { exportModel } from '../../../ml/compression/export-model.js';
import { DataError } from '../../../ml/data/data-error.js';
import { loadModel } from '../../../ml/models/io.js';
import { copyOnnxFolder, exportOnnxFolder } from '../../../ml/onnx/export.js';
import { readOnnxMeta, type InputEncodingMeta } from '../../../ml/onnx/meta.js';
import type { ModelRuntimes } from '../../../ml/runtime/load-model.js';
import type { ModelFormat } from '../../../ml/runtime/loaded-model.js';
import type { InputSpec } from '../../../serving/registry.js';
import type { DeployParams } from './params.js';

export interface ExportPlan {
  sourceDir: string;
  sourceFormat: ModelFormat;
  format: ModelFormat;
  quantize: DeployParams['quantize'];
  inputSpec: InputSpec;
}

/**
 * Refuses, before any work, what cannot be exported: ONNX back to tfjs, quantizations ONNX does
 * not have here, re-quantizing an ONNX graph, an ONNX model trained on other inputs than the dataset's.
 */
export async function checkExport(p: ExportPlan): Promise<void> {
  if (p.sourceFormat === 'onnx' && p.format === 'tfjs-layers') {
    throw badInput(
      'the input model is ONNX; Capstan converts tfjs layers models to ONNX, not back: deploy it as onnx (leave params.format unset)',
      'CONVERSION_UNSUPPORTED',
    );
  }
  if (p.format === 'onnx' && p.quantize !== 'none' && p.quantize !== 'uint8')
    throw badInput(`quantize ${p.quantize} is not available for ONNX models: use none or uint8`, 'BAD_PARAMS');
  if (p.sourceFormat !== 'onnx') return;
  const meta = await readOnnxMeta(p.sourceDir);
  checkEncoding(meta.input.encoding, p.inputSpec);
  if (p.quantize !== 'none' && meta.quantization !== p.quantize) {
    throw badInput(
      `quantize ${p.quantize}: the input ONNX model's weights are stored as ${meta.quantization === 'none' ? 'float32' : meta.quantization}, and Capstan does not re-quantize ONNX graphs; quantize where the model is exported (ONNX Runtime's Python quantizer), or deploy with quantize: none`,
      'BAD_PARAMS',
    );
  }
}

/**
 * Writes the model into `destDir` in `format` (checkExport first); returns how its weights are
 * stored. tfjs → tfjs copies (quantizing float32 weights when asked); tfjs → ONNX converts (uint8
 * when asked, or when the source's weights already are uint8); ONNX → ONNX copies the folder.
 */
export async function exportAs(o: ExportPlan & { destDir: string; runtimes: ModelRuntimes }): Promise<string> {
  if (o.format === 'tfjs-layers') {
    const { tf } = await o.runtimes.tf();
    return (await exportModel(tf, { sourceDir: o.sourceDir, destDir: o.destDir, quantize: o.quantize })).weightFormat;
  }
  if (o.sourceFormat === 'onnx') {
    const meta = await copyOnnxFolder(o.sourceDir, o.destDir);
    return meta.quantization === 'none' ? 'float32' : meta.quantization;
  }
  const { tf } = await o.runtimes.tf();
  const net = await loadModel(tf, o.sourceDir);
  try {
    const stored = await storedWeightFormat(o.sourceDir);
    const quantize = o.quantize === 'uint8' || stored === 'uint8' ? 'uint8' : 'none';
    const meta = await exportOnnxFolder(net, o.destDir, { quantize, encoding: encodingOf(o.inputSpec) });
    return meta.quantization === 'none' ? 'float32' : meta.quantization;
  } finally {
    net.dispose();
  }
}

async function storedWeightFormat(dir: string): Promise<string> {
  const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8')) as { weightsManifest?: { weights: { quantization?: { dtype: string } }[] }[] };
  return (json.weightsManifest ?? []).flatMap((g) => g.weights).find((w) => w.quantization)?.quantization?.dtype ?? 'float32';
}

/** The dataset's normalisation as capstan-model.json says it. */
function encodingOf(spec: InputSpec): InputEncodingMeta {
  const raw = spec.raw;
  if (!raw) return { kind: 'none' };
  return raw.kind === 'scale' ? { kind: 'scale', scale: raw.scale, rawRange: raw.rawRange } : { kind: 'zscore', mean: raw.mean, std: raw.std };
}

/** An ONNX model that records how it was trained to take inputs must agree with the dataset it is measured on. */
function checkEncoding(model: InputEncodingMeta, spec: InputSpec): void {
  if (model.kind === 'none') return;
  const data = encodingOf(spec);
  const say = (e: InputEncodingMeta) =>
    e.kind === 'scale' ? `inputs scaled by ${e.scale}` : e.kind === 'zscore' ? `z-scored inputs (${e.mean.length} features)` : 'inputs as they come';
  const same =
    model.kind === data.kind &&
    (model.kind !== 'scale' || (data.kind === 'scale' && Math.abs(model.scale - data.scale) <= 1e-6 * Math.abs(data.scale))) &&
    (model.kind !== 'zscore' || (data.kind === 'zscore' && model.mean.length === data.mean.length));
  if (!same)
    throw new DataError(`the ONNX model was trained on ${say(model)} (capstan-model.json) but the dataset gives ${say(data)}`, {
      code: 'MODEL_DATASET_MISMATCH',
    });
}
