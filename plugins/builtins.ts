import { existsSync } from 'node:fs';
import path from 'node:path';
import type { StagePlugin } from './contract.js';
import { StageRegistry } from './registry.js';
import { loadExternalPlugins } from './loader.js';
import { dataPrepStage } from './core/data-prep/index.js';
import { pretrainStage } from './core/pretrain/index.js';
import { pruneQuantizeStage } from './core/prune-quantize/index.js';
import { multiDeviceFitStage } from './core/multi-device-fit/index.js';
import { deployStage } from './core/deploy/index.js';
import { roiLedgerStage } from './core/roi-ledger/index.js';
import type { BackendName } from '../ml/backend.js';
import type { OnnxRuntimeOptions } from '../ml/runtime/onnx-model.js';

export interface BuiltinOptions {
  /** The first data root when `dataRoots` is not given. */
  baseDir?: string;
  /** Absolute folders data sources are confined to (CAPSTAN_DATA_ROOTS); relative data paths in specs are resolved against the first. */
  dataRoots?: string[];
  /** Largest data file core:data-prep reads, in bytes (default 2 GiB). */
  maxDataFileBytes?: number;
  /** Preferred TensorFlow.js backend for every ML job and in-process measurement (CAPSTAN_TF_BACKEND). */
  tfBackend?: BackendName;
  /** How ONNX Runtime runs ONNX models in core:deploy (CAPSTAN_ONNX_EP, CAPSTAN_ONNX_THREADS). */
  onnx?: OnnxRuntimeOptions;
  /** Largest model core:pretrain builds, in trainable parameters (CAPSTAN_MAX_MODEL_PARAMETERS; default 50 M). */
  maxModelParameters?: number;
}

/** The built-in stage plugins: the default pipeline data-prep → pretrain → prune-quantize → multi-device fit → deploy → ROI ledger. */
export function builtinStages(o: BuiltinOptions = {}): StagePlugin<unknown>[] {
  const tf = o.tfBackend ? { tfBackend: o.tfBackend } : {};
  return [
    dataPrepStage({
      ...(o.dataRoots ? { dataRoots: o.dataRoots } : {}),
      ...(o.baseDir ? { baseDir: o.baseDir } : {}),
      ...(o.maxDataFileBytes ? { maxFileBytes: o.maxDataFileBytes } : {}),
    }),
    pretrainStage({ ...tf, ...(o.maxModelParameters ? { maxParameters: o.maxModelParameters } : {}) }),
    pruneQuantizeStage(tf),
    multiDeviceFitStage(tf),
    deployStage({ ...tf, ...(o.onnx ? { onnx: o.onnx } : {}) }),
    roiLedgerStage(),
  ];
}

/** The stages shipped with Capstan as manifests (any-language stages, e.g. `seed:keras-mlp`): `stages/`. */
export const BUNDLED_STAGES_DIR = path.resolve(import.meta.dirname, '..', 'stages');

/** A frozen registry with the built-ins, the bundled manifest stages and the external plugins named in CAPSTAN_PLUGINS. */
export async function buildRegistry(opts: { external: string[]; cwd: string } & BuiltinOptions): Promise<StageRegistry> {
  const stages = new StageRegistry();
  for (const p of builtinStages(opts)) stages.register(p);
  if (existsSync(BUNDLED_STAGES_DIR)) await loadExternalPlugins(stages, [BUNDLED_STAGES_DIR], { cwd: opts.cwd });
  await loadExternalPlugins(stages, opts.external, { cwd: opts.cwd });
  return stages.freeze();
}
