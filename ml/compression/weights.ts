// Pure operations on a model's weights as stored (ModelArtifacts): decode, prune, quantize, encode.
// No tfjs runtime here, so every piece is testable on plain arrays.
import type * as TF from '@tensorflow/tfjs';

export type ModelArtifacts = TF.io.ModelArtifacts;
export type WeightsManifestEntry = TF.io.WeightsManifestEntry;

/** One ArrayBuffer out of tfjs' WeightData (a list of buffers is allowed since tfjs 4.x). */
export function joinWeightData(data: ArrayBuffer | ArrayBuffer[] | undefined): ArrayBuffer {
  if (data === undefined) return new ArrayBuffer(0);
  if (!Array.isArray(data)) return data;
  const out = new Uint8Array(data.reduce((n, b) => n + b.byteLength, 0));
  let off = 0;
  for (const b of data) {
    out.set(new Uint8Array(b), off);
    off += b.byteLength;
  }
  return out.buffer;
}

export type QuantizeDtype = 'uint8' | 'uint16' | 'float16';

/** One float32 weight tensor: its manifest entry (without quantization) and its values. */
export interface FloatWeight {
  name: string;
  shape: number[];
  values: Float32Array;
}

/** A 0/1 keep-mask for one weight tensor (1 = kept, 0 = pruned). */
export interface WeightMask {
  name: string;
  shape: number[];
  keep: Uint8Array;
}

/** Decodes unquantized float32 weights. Refuses quantized or non-float inputs (prune before quantizing). */
export function decodeFloatWeights(artifacts: ModelArtifacts): FloatWeight[] {
  const specs = artifacts.weightSpecs ?? [];
  const buf = joinWeightData(artifacts.weightData);
  const out: FloatWeight[] = [];
  let off = 0;
  for (const s of specs) {
    if (s.quantization) throw new Error(`weight ${s.name} is already quantized (${s.quantization.dtype}); prune-quantize needs a float32 model`);
    if (s.dtype !== 'float32') throw new Error(`weight ${s.name} has dtype ${s.dtype}; only float32 weights are supported`);
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (off + n * 4 > buf.byteLength) throw new Error(`weight data is shorter than the manifest says (at ${s.name})`);
    out.push({ name: s.name, shape: [...s.shape], values: new Float32Array(buf.slice(off, off + n * 4)) });
    off += n * 4;
  }
  return out;
}

export function encodeFloatWeights(weights: FloatWeight[]): { weightSpecs: WeightsManifestEntry[]; weightData: ArrayBuffer } {
  const total = weights.reduce((n, w) => n + w.values.byteLength, 0);
  const data = new Uint8Array(total);
  let off = 0;
  const weightSpecs: WeightsManifestEntry[] = [];
  for (const w of weights) {
    data.set(new Uint8Array(w.values.buffer, w.values.byteOffset, w.values.byteLength), off);
    off += w.values.byteLength;
    weightSpecs.push({ name: w.name, shape: w.shape, dtype: 'float32' });
  }
  return { weightSpecs, weightData: data.buffer };
}

/** Kernels (dense/conv matrices) are pruned; biases, norms and embeddings' scalars are not. */
export function isPrunable(w: { name: string; shape: number[] }): boolean {
  return /(^|\/)(kernel|depthwise_kernel|pointwise_kernel)(_\d+)?$/.test(w.name) && w.shape.length >= 2;
}

/**
 * Magnitude pruning of one tensor, in place: exactly round(sparsity × n) smallest-magnitude values
 * become 0 (ties broken by index, so the count is exact). Returns the keep-mask.
 */
export function magnitudePrune(values: Float32Array, sparsity: number): Uint8Array {
  const n = values.length;
  const k = Math.round(sparsity * n);
  const keep = new Uint8Array(n).fill(1);
  if (k <= 0) return keep;
  const idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  const abs = new Float32Array(n);
  for (let i = 0; i < n; i++) abs[i] = Math.abs(values[i]!);
  idx.sort((a, b) => abs[a]! - abs[b]! || a - b);
  for (let j = 0; j < k; j++) {
    const i = idx[j]!;
    keep[i] = 0;
    values[i] = 0;
  }
  return keep;
}

/** Prunes every prunable weight to `sparsity` (per tensor). Mutates `weights`; returns the masks. */
export function pruneWeights(weights: FloatWeight[], sparsity: number): WeightMask[] {
  const masks: WeightMask[] = [];
  for (const w of weights) {
    if (!isPrunable(w)) continue;
    masks.push({ name: w.name, shape: [...w.shape], keep: magnitudePrune(w.values, sparsity) });
  }
  return masks;
}

/** Multiplies values by a keep-mask in place (used after fine-tuning steps). */
export function applyMask(values: Float32Array, keep: Uint8Array): void {
  if (values.length !== keep.length) throw new Error(`mask length ${keep.length} does not match weight length ${values.length}`);
  for (let i = 0; i < values.length; i++) if (keep[i] === 0) values[i] = 0;
}

/** Zeros and total element count over the prunable weights. */
export function countZeros(weights: FloatWeight[], filter: (w: FloatWeight) => boolean = isPrunable): { zeros: number; total: number } {
  let zeros = 0;
  let total = 0;
  for (const w of weights) {
    if (!filter(w)) continue;
    total += w.values.length;
    for (const v of w.values) if (v === 0) zeros++;
  }
  return { zeros, total };
}

/**
 * Affine quantization as tfjs-converter does it (quantization.py): scale = (max − min) / qmax, with
 * the range nudged so that 0.0 is exactly representable (pruned zeros stay exactly zero).
 * tfjs dequantizes as `q * scale + min`.
 */
export function affineQuantize(values: Float32Array, dtype: 'uint8' | 'uint16'): { data: Uint8Array | Uint16Array; scale: number; min: number } {
  const qmax = dtype === 'uint8' ? 255 : 65535;
  const out = dtype === 'uint8' ? new Uint8Array(values.length) : new Uint16Array(values.length);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (values.length === 0 || lo === hi) return { data: out, scale: 1, min: values.length === 0 ? 0 : lo };
  const scale = (hi - lo) / qmax;
  let min = lo;
  let max = hi;
  if (lo <= 0 && 0 <= hi) {
    const zeroPoint = Math.round((0 - lo) / scale);
    min = -zeroPoint * scale;
    max = qmax * scale + min;
  }
  for (let i = 0; i < values.length; i++) {
    const c = Math.min(max, Math.max(min, values[i]!));
    out[i] = Math.min(qmax, Math.max(0, Math.round((c - min) / scale)));
  }
  return { data: out, scale, min };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE-754 half from a float32 value, round-to-nearest-even; overflow → ±Inf, NaN kept. */
export function toFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/**
 * Quantizes every float32 weight; the manifest entries carry `quantization` exactly as
 * tfjs-converter writes it ({ dtype, scale, min } or { dtype: 'float16' }), dtype stays 'float32'.
 */
export function quantizeWeights(weights: FloatWeight[], dtype: QuantizeDtype): { weightSpecs: WeightsManifestEntry[]; weightData: ArrayBuffer } {
  const parts: Uint8Array[] = [];
  const weightSpecs: WeightsManifestEntry[] = [];
  for (const w of weights) {
    if (dtype === 'float16') {
      const h = new Uint16Array(w.values.length);
      for (let i = 0; i < h.length; i++) h[i] = toFloat16Bits(w.values[i]!);
      parts.push(new Uint8Array(h.buffer));
      weightSpecs.push({ name: w.name, shape: w.shape, dtype: 'float32', quantization: { dtype: 'float16' } });
    } else {
      const q = affineQuantize(w.values, dtype);
      parts.push(new Uint8Array(q.data.buffer, q.data.byteOffset, q.data.byteLength));
      weightSpecs.push({ name: w.name, shape: w.shape, dtype: 'float32', quantization: { dtype, scale: q.scale, min: q.min } });
    }
  }
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const data = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.byteLength;
  }
  return { weightSpecs, weightData: data.buffer };
}
