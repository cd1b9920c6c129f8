// Which format a model folder holds, and loading it into the runtime for that format.
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadedTf } from '../backend.js';
import { DataError } from '../data/data-error.js';
import { ONNX_META_FILE } from '../onnx/meta.js';
import type { LoadedModel, ModelFormat } from './loaded-model.js';
import { loadOnnxModel, type OnnxRuntimeOptions } from './onnx-model.js';
import { loadTfjsModel } from './tfjs-model.js';

/** The runtimes a loader may use: TensorFlow.js (loaded on demand) and ONNX Runtime's options. */
export interface ModelRuntimes {
  tf: () => Promise<LoadedTf>;
  onnx?: OnnxRuntimeOptions;
}

/**
 * The format of a model folder: `onnx` when it holds capstan-model.json saying so, `tfjs-layers`
 * when it holds model.json. Anything else is a DataError MODEL_FORMAT_UNKNOWN.
 */
export async function detectFormat(dir: string): Promise<ModelFormat> {
  const exists = (f: string) =>
    access(path.join(dir, f)).then(
      () => true,
      () => false,
    );
  if (await exists(ONNX_META_FILE)) {
    let raw: { format?: unknown };
    try {
      raw = JSON.parse(await readFile(path.join(dir, ONNX_META_FILE), 'utf8')) as { format?: unknown };
    } catch (e) {
      throw new DataError(`${ONNX_META_FILE} cannot be read as JSON: ${(e as Error).message}`, { code: 'MODEL_META_INVALID' });
    }
    if (raw.format === 'onnx') return 'onnx';
    throw new DataError(`${ONNX_META_FILE} says format ${JSON.stringify(raw.format)}; Capstan reads onnx model folders described by it`, {
      code: 'MODEL_FORMAT_UNKNOWN',
    });
  }
  if (await exists('model.json')) return 'tfjs-layers';
  if (await exists('model.onnx'))
    throw new DataError(`the folder has model.onnx but no ${ONNX_META_FILE} saying its input, output and labels (docs/onnx-models.md)`, {
      code: 'MODEL_FORMAT_UNKNOWN',
    });
  throw new DataError('the folder holds no model: neither model.json (tfjs layers) nor model.onnx with capstan-model.json (ONNX)', {
    code: 'MODEL_FORMAT_UNKNOWN',
  });
}

/** Loads a model folder of a known format with its runtime. */
export async function loadModelFolder(dir: string, format: ModelFormat, runtimes: ModelRuntimes): Promise<LoadedModel> {
  return format === 'onnx' ? loadOnnxModel(dir, runtimes.onnx) : loadTfjsModel(await runtimes.tf(), dir);
}
