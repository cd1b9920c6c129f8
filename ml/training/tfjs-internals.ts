// Every use of TensorFlow.js's private internals, in one place. The step loop's fast kernels
// (step-kernels.ts) reach past the public API in three ways:
//  - wasm: a tensor's place in the wasm heap (`backend.dataIdMap`, `backend.wasm.HEAPF32`) and an
//    uninitialised output tensor (`backend.makeOutput`), so Adam updates weights in their own memory;
//  - cpu: a tensor's values array (`backend.data`);
//  - native ('tensorflow'): TensorFlow ops by name (`backend.executeSingleOutput`,
//    `executeMultipleOutputs`, the binding's attribute constants).
// None of it is part of tfjs's API, so an upgrade may move it without notice. Each accessor checks,
// when the step kernels are made for a backend, that what it relies on is there, and otherwise
// fails naming the tfjs version, the backend and the missing piece — never a TypeError deep in a
// training step. test/ml/tfjs-internals.test.ts pins the version these were checked against.
import type * as TF from '@tensorflow/tfjs';
import type { Tf } from '../models/mlp.js';

/** The tfjs version these accessors were written and tested against (package.json pins it). */
export const TFJS_INTERNALS_CHECKED = '4.22.0';

/** What a step kernel needs of a JavaScript-memory backend (wasm, cpu). */
export interface JsBackendInternals {
  /** A live view of a float32 tensor's memory: writes change the tensor. Take it again after any allocation (the wasm heap may move). */
  memoryView(t: TF.Tensor): Float32Array;
  /** wasm only: a new float32 tensor of this shape with uninitialised memory (wasm caches packed weights by tensor). */
  freshTensor?(shape: number[]): TF.Tensor;
}

/** A TensorFlow attribute for a native op. */
export interface OpAttr {
  name: string;
  type: number;
  value: unknown;
}

/** What a step kernel needs of the native backend: TensorFlow ops by name. */
export interface NativeBackendInternals {
  /** The binding's constants (TF_ATTR_TYPE, TF_FLOAT, TF_ATTR_BOOL, TF_ATTR_STRING, …). */
  binding: Record<string, number>;
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: TF.Tensor[]): TF.Tensor;
  executeMultipleOutputs(name: string, attrs: OpAttr[], inputs: TF.Tensor[], n: number): TF.Tensor[];
}

/** Thrown when a private part of tfjs that the fast kernels use is missing: names the version and what. */
export class TfjsInternalsError extends Error {
  constructor(tf: Tf, backend: string, missing: string) {
    super(
      `TensorFlow.js ${versionOf(tf)} (${backend} backend) has no ${missing}: the step loop's fast kernels rely on it ` +
        `(ml/training/tfjs-internals.ts, checked against ${TFJS_INTERNALS_CHECKED}). Pin @tensorflow/tfjs to ${TFJS_INTERNALS_CHECKED} ` +
        'or update the accessors there.',
    );
    this.name = 'TfjsInternalsError';
  }
}

function versionOf(tf: Tf): string {
  return (tf as { version_core?: string }).version_core ?? 'of an unknown version';
}

const isFn = (x: unknown): x is (...a: never[]) => unknown => typeof x === 'function';
const has = (o: unknown, k: string): o is Record<string, unknown> => !!o && typeof o === 'object' && k in o;

/** A tensor's private data id (the key of every backend's memory map). */
function dataIdOf(tf: Tf, backend: string, t: TF.Tensor): object {
  const id = (t as unknown as { dataId?: unknown }).dataId;
  if (!id || typeof id !== 'object') throw new TfjsInternalsError(tf, backend, 'tensor.dataId');
  return id;
}

/** The wasm or cpu backend's memory accessors; checks what they rely on first. */
export function jsBackendInternals(tf: Tf, backend: 'wasm' | 'cpu'): JsBackendInternals {
  const b: unknown = tf.backend();
  if (backend === 'wasm') {
    if (!has(b, 'dataIdMap') || !has(b.dataIdMap, 'get') || !isFn(b.dataIdMap.get)) throw new TfjsInternalsError(tf, backend, 'backend.dataIdMap.get()');
    if (!has(b, 'wasm') || !has(b.wasm, 'HEAPF32') || !(b.wasm.HEAPF32 instanceof Float32Array))
      throw new TfjsInternalsError(tf, backend, 'backend.wasm.HEAPF32');
    if (!isFn(b.makeOutput)) throw new TfjsInternalsError(tf, backend, 'backend.makeOutput()');
    const wasm = b as unknown as {
      dataIdMap: { get(id: object): { memoryOffset?: unknown } | undefined };
      wasm: { HEAPF32: Float32Array };
      makeOutput(shape: number[], dtype: 'float32'): TF.TensorInfo;
    };
    return {
      memoryView(t) {
        const info = wasm.dataIdMap.get(dataIdOf(tf, backend, t));
        if (!info) throw new Error('tensor has no wasm memory (disposed?)');
        if (typeof info.memoryOffset !== 'number') throw new TfjsInternalsError(tf, backend, 'memoryOffset in backend.dataIdMap entries');
        const heap = wasm.wasm.HEAPF32; // read each time: the heap may have grown
        return heap.subarray(info.memoryOffset / 4, info.memoryOffset / 4 + t.size);
      },
      freshTensor: (shape) => tf.engine().makeTensorFromTensorInfo(wasm.makeOutput(shape, 'float32')),
    };
  }
  if (!has(b, 'data') || !has(b.data, 'get') || !isFn(b.data.get)) throw new TfjsInternalsError(tf, backend, 'backend.data.get()');
  const cpu = b as unknown as { data: { get(id: object): { values?: unknown } | undefined } };
  return {
    memoryView(t) {
      const info = cpu.data.get(dataIdOf(tf, backend, t));
      if (!info) throw new Error('tensor has no cpu memory (disposed?)');
      if (!(info.values instanceof Float32Array)) throw new TfjsInternalsError(tf, backend, 'a Float32Array `values` in backend.data entries');
      return info.values;
    },
  };
}

/** The native backend's op execution; checks what it relies on first. */
export function nativeBackendInternals(tf: Tf): NativeBackendInternals {
  const b: unknown = tf.backend();
  const backend = 'tensorflow';
  if (!has(b, 'executeSingleOutput') || !isFn(b.executeSingleOutput)) throw new TfjsInternalsError(tf, backend, 'backend.executeSingleOutput()');
  if (!isFn(b.executeMultipleOutputs)) throw new TfjsInternalsError(tf, backend, 'backend.executeMultipleOutputs()');
  if (!has(b, 'binding') || !b.binding || typeof b.binding !== 'object') throw new TfjsInternalsError(tf, backend, 'backend.binding');
  for (const k of ['TF_ATTR_TYPE', 'TF_ATTR_BOOL', 'TF_ATTR_STRING', 'TF_FLOAT']) {
    if (typeof (b.binding as Record<string, unknown>)[k] !== 'number') throw new TfjsInternalsError(tf, backend, `backend.binding.${k}`);
  }
  return b as unknown as NativeBackendInternals;
}

/** The attributes tfjs passes a registered kernel, as the kernel's own type (tfjs types them as a loose map). */
export function kernelAttrs<T>(attrs: unknown): T {
  return attrs as T;
}

/** A tensor returned from a registered kernel (tfjs's kernel type wants TensorInfo; a Tensor is one at run time). */
export function asTensorInfo(t: TF.Tensor): TF.TensorInfo {
  return t as unknown as TF.TensorInfo;
}
