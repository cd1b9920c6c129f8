// The ONNX format behind the LoadedModel interface: a folder with model.onnx and
// capstan-model.json, run by ONNX Runtime (onnxruntime-node, CPU execution provider). The npm
// package is imported on first load, never at import time.
import path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { DataError } from '../data/data-error.js';
import { readOnnxMeta, type OnnxModelMeta } from '../onnx/meta.js';
import { sizeOf, type LoadedModel } from './loaded-model.js';

export interface OnnxRuntimeOptions {
  /**
   * `cpu` (default) or `cuda`. CUDA needs ONNX Runtime's CUDA provider libraries, which the npm
   * package's install script downloads and which are not installed here; when they cannot be
   * loaded the session falls back to the CPU and `runtime` says why. Never run on a GPU.
   */
  executionProvider?: 'cpu' | 'cuda';
  /** Threads one inference may use (ONNX Runtime's intra-op pool); default: ONNX Runtime's choice (one per core). */
  intraOpThreads?: number;
}

type OrtModule = typeof Ort;
let ortModule: Promise<OrtModule> | undefined;

/** onnxruntime-node, imported once per process on first use. */
export function loadOrt(): Promise<OrtModule> {
  ortModule ??= import('onnxruntime-node').then((m) => ((m as unknown as { default?: OrtModule }).default ?? m) as OrtModule);
  return ortModule;
}

/** "onnxruntime-node 1.30.0 (cpu)". */
export async function onnxRuntimeName(ep: string = 'cpu'): Promise<string> {
  const ort = await loadOrt();
  return `onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common} (${ep})`;
}

/** Loads an ONNX model folder, checks its graph against capstan-model.json, and warms it up. */
export async function loadOnnxModel(dir: string, opts: OnnxRuntimeOptions = {}): Promise<LoadedModel> {
  const meta = await readOnnxMeta(dir);
  const ort = await loadOrt();
  const base: Ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
  };
  const file = path.join(dir, meta.file);
  let session: Ort.InferenceSession;
  let ep = 'cpu';
  const create = (providers: string[]) => ort.InferenceSession.create(file, { ...base, executionProviders: providers });
  try {
    if (opts.executionProvider === 'cuda') {
      try {
        session = await create(['cuda', 'cpu']);
        ep = 'cuda';
      } catch (e) {
        session = await create(['cpu']);
        ep = `cpu; cuda unavailable: ${firstLine(e)}`;
      }
    } else {
      session = await create(['cpu']);
    }
  } catch (e) {
    throw new DataError(`${meta.file} cannot be loaded by ONNX Runtime: ${firstLine(e)}`, { code: 'MODEL_INVALID' });
  }
  try {
    const model = wrap(ort, session, meta, await onnxRuntimeName(ep));
    await model.predict(new Float32Array(sizeOf(model.sampleShape)), 1);
    return model;
  } catch (e) {
    await session.release();
    throw e;
  }
}

function wrap(ort: OrtModule, session: Ort.InferenceSession, meta: OnnxModelMeta, runtime: string): LoadedModel {
  const sampleShape = meta.input.shape.slice(1) as number[];
  checkGraph(session, meta, sampleShape);
  const out = session.outputMetadata.find((o) => o.name === meta.output.name);
  const last = out?.isTensor ? out.shape[out.shape.length - 1] : undefined;
  if (typeof last === 'number' && last !== meta.labels.length) {
    throw new DataError(`model.onnx does not match capstan-model.json: output ${meta.output.name} has ${last} classes, labels name ${meta.labels.length}`, {
      code: 'MODEL_META_INVALID',
    });
  }
  const numClasses = typeof last === 'number' ? last : meta.labels.length;
  const inputName = meta.input.name;
  const outputName = meta.output.name;
  const logits = meta.output.kind === 'logits';
  return {
    format: 'onnx',
    runtime,
    sampleShape,
    numClasses,
    labels: meta.labels,
    async predict(x, n) {
      const feeds = {
        [inputName]: new ort.Tensor('float32', x.length === n * sizeOf(sampleShape) ? x : x.subarray(0, n * sizeOf(sampleShape)), [n, ...sampleShape]),
      };
      const result = await session.run(feeds, [outputName]);
      const y = result[outputName]!;
      try {
        const classes = y.dims[y.dims.length - 1] ?? 1;
        const data = y.data as Float32Array;
        return { probabilities: logits ? softmaxRows(data, classes) : data, classes };
      } finally {
        y.dispose();
      }
    },
    async dispose() {
      await session.release();
    },
  };
}

/** The graph must have the input and output capstan-model.json names, with the same sample shape. */
function checkGraph(session: Ort.InferenceSession, meta: OnnxModelMeta, sampleShape: number[]): void {
  const fail = (what: string) => new DataError(`model.onnx does not match capstan-model.json: ${what}`, { code: 'MODEL_META_INVALID' });
  const input = session.inputMetadata.find((i) => i.name === meta.input.name);
  if (!input) throw fail(`the graph has no input ${meta.input.name} (its inputs: ${session.inputNames.join(', ')})`);
  if (!session.outputNames.includes(meta.output.name))
    throw fail(`the graph has no output ${meta.output.name} (its outputs: ${session.outputNames.join(', ')})`);
  if (input.isTensor) {
    if (input.type !== 'float32') throw fail(`input ${input.name} is ${input.type}, not float32`);
    const dims = input.shape.slice(1);
    const same = dims.length === sampleShape.length && dims.every((d, i) => typeof d !== 'number' || d === sampleShape[i]);
    if (input.shape.length > 0 && !same)
      throw fail(`input ${input.name} has shape [${input.shape.join(', ')}], capstan-model.json says [batch, ${sampleShape.join(', ')}]`);
  }
}

function softmaxRows(z: Float32Array, classes: number): Float32Array {
  const out = new Float32Array(z.length);
  for (let r = 0; r < z.length; r += classes) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, z[r + c]!);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += out[r + c] = Math.exp(z[r + c]! - max);
    for (let c = 0; c < classes; c++) out[r + c]! /= sum;
  }
  return out;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}
