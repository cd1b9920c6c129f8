// tfjs layers → ONNX: a Sequential stack of the layers Capstan builds (InputLayer, Reshape,
// Conv2D, MaxPooling2D, Flatten, Dense, Activation, Dropout) as an opset-13 graph (MatMul, Add,
// Conv, MaxPool, Flatten, Reshape, Transpose, Relu/Tanh/Sigmoid/Elu/Softmax). The graph keeps
// tfjs's channels-last layout at its edges: image layers run in ONNX's NCHW between a Transpose
// in and a Transpose out, so Flatten sees the NHWC order the dense weights were trained on.
// With `quantize: 'uint8'`, kernels are stored as uint8 with a per-tensor scale and zero point
// and dequantized in the graph (DequantizeLinear), biases stay float32.
import type * as TF from '@tensorflow/tfjs';
import { DataError } from '../data/data-error.js';
import { encodeModel, OnnxDataType, type OnnxAttribute, type OnnxNode, type OnnxTensor } from './proto.js';

export const ONNX_OPSET = 13;
export const TFJS_TO_ONNX_PRODUCER = 'capstan tfjs-to-onnx';
export const TFJS_TO_ONNX_VERSION = '1';

export interface TfjsToOnnxOptions {
  quantize?: 'none' | 'uint8';
  /** Graph input name (default `input`). */
  inputName?: string;
  /** Graph output name (default `probabilities`). */
  outputName?: string;
}

export interface OnnxGraphBytes {
  bytes: Uint8Array;
  inputName: string;
  outputName: string;
  /** One sample's shape, e.g. [28, 28]. */
  sampleShape: number[];
  numClasses: number;
  /** Whether the last layer is a softmax (the output is probabilities) or not (logits). */
  outputKind: 'probabilities' | 'logits';
  opset: number;
}

type Activation = 'relu' | 'tanh' | 'sigmoid' | 'elu' | 'softmax' | 'linear';
const ACTIVATION_OPS: Record<Exclude<Activation, 'linear'>, string> = { relu: 'Relu', tanh: 'Tanh', sigmoid: 'Sigmoid', elu: 'Elu', softmax: 'Softmax' };

/** Converts a loaded tfjs layers model; unsupported layers are a DataError ONNX_EXPORT_UNSUPPORTED naming the layer. */
export function tfjsToOnnx(model: TF.LayersModel, opts: TfjsToOnnxOptions = {}): OnnxGraphBytes {
  const inputName = opts.inputName ?? 'input';
  const outputName = opts.outputName ?? 'probabilities';
  const inShape = model.inputs[0]?.shape;
  if (model.inputs.length !== 1 || model.outputs.length !== 1 || !inShape) throw unsupported('the model must have one input and one output');
  const sampleShape = inShape.slice(1);
  if (sampleShape.some((d) => d === null || d === undefined)) throw unsupported(`input shape ${JSON.stringify(inShape)} has unknown dimensions`);
  const layers = model.layers;
  layers.forEach((l, i) => {
    const prev = i > 0 ? layers[i - 1] : undefined;
    const inbound = (l as unknown as { inboundNodes: { inboundLayers: unknown[] }[] }).inboundNodes[0]?.inboundLayers ?? [];
    if (prev && (inbound.length !== 1 || inbound[0] !== prev))
      throw unsupported(`layer ${l.name}: only a straight stack of layers converts (it does not take ${prev.name}'s output alone)`);
  });

  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  let cur = inputName;
  /** Shape of `cur` per sample, in tfjs's (channels-last) terms. */
  let shape = sampleShape as number[];
  /** Whether `cur` is transposed to NCHW right now. */
  let nchw = false;
  let lastActivation = 'linear' as Activation;
  let seq = 0;
  const fresh = (base: string) => `${base}_${seq++}`;
  const add = (opType: string, inputs: string[], attributes: OnnxNode['attributes'] = [], name = fresh(opType.toLowerCase())): string => {
    const out = `${name}:0`;
    nodes.push({ opType, name, inputs, outputs: [out], attributes });
    cur = out;
    return out;
  };
  const toNhwc = () => {
    if (!nchw) return;
    add('Transpose', [cur], [{ name: 'perm', ints: [0, 2, 3, 1] }]);
    nchw = false;
  };
  const toNchw = () => {
    if (nchw) return;
    add('Transpose', [cur], [{ name: 'perm', ints: [0, 3, 1, 2] }]);
    nchw = true;
  };
  const activate = (a: Activation, layer: string) => {
    lastActivation = a;
    if (a === 'linear') return;
    const op = ACTIVATION_OPS[a];
    if (!op) throw unsupported(`layer ${layer}: activation ${String(a)}`);
    add(op, [cur], op === 'Softmax' ? [{ name: 'axis', int: -1 }] : op === 'Elu' ? [{ name: 'alpha', float: 1 }] : [], fresh(`${layer}_${a}`));
  };
  /** A weight as an initializer (float32 or uint8 + DequantizeLinear); returns the float tensor's name. */
  const weight = (name: string, dims: number[], values: Float32Array, quantize: boolean): string => {
    if (!quantize || opts.quantize !== 'uint8') {
      inits.push({ name, dataType: OnnxDataType.FLOAT, dims, raw: floatBytes(values) });
      return name;
    }
    const q = quantizeUint8(values);
    inits.push({ name: `${name}_quantized`, dataType: OnnxDataType.UINT8, dims, raw: q.values });
    inits.push({ name: `${name}_scale`, dataType: OnnxDataType.FLOAT, dims: [], raw: floatBytes(Float32Array.of(q.scale)) });
    inits.push({ name: `${name}_zero_point`, dataType: OnnxDataType.UINT8, dims: [], raw: Uint8Array.of(q.zeroPoint) });
    const out = `${name}_dequantized`;
    nodes.push({
      opType: 'DequantizeLinear',
      name: `${name}_dequantize`,
      inputs: [`${name}_quantized`, `${name}_scale`, `${name}_zero_point`],
      outputs: [out],
    });
    return out;
  };

  for (const layer of layers) {
    const kind = layer.getClassName();
    const cfg = layer.getConfig() as Record<string, unknown>;
    const w = layer.getWeights().map((t) => ({ shape: t.shape, values: t.dataSync() as Float32Array }));
    switch (kind) {
      case 'InputLayer':
      case 'Dropout':
        break;
      case 'Activation':
        activate(cfg.activation as Activation, layer.name);
        break;
      case 'Reshape': {
        toNhwc();
        const target = cfg.targetShape as number[];
        const dims = `${layer.name}_shape`;
        inits.push({ name: dims, dataType: OnnxDataType.INT64, dims: [target.length + 1], raw: int64Bytes([-1, ...target]) });
        add('Reshape', [cur, dims], [], layer.name);
        shape = [...target];
        lastActivation = 'linear';
        break;
      }
      case 'Flatten':
        toNhwc();
        add('Flatten', [cur], [{ name: 'axis', int: 1 }], layer.name);
        shape = [shape.reduce((a, b) => a * b, 1)];
        lastActivation = 'linear';
        break;
      case 'Dense': {
        toNhwc();
        const [kernel, bias] = w;
        if (!kernel) throw unsupported(`layer ${layer.name}: a Dense layer without a kernel`);
        const units = kernel.shape[1]!;
        const k = weight(`${layer.name}_kernel`, kernel.shape, kernel.values, true);
        add('MatMul', [cur, k], [], `${layer.name}_matmul`);
        if (bias) add('Add', [cur, weight(`${layer.name}_bias`, bias.shape, bias.values, false)], [], `${layer.name}_bias_add`);
        shape = [...shape.slice(0, -1), units];
        activate(cfg.activation as Activation, layer.name);
        break;
      }
      case 'Conv2D': {
        if (shape.length !== 3) throw unsupported(`layer ${layer.name}: Conv2D needs [h, w, c] inputs, got [${shape.join(', ')}]`);
        if (cfg.dataFormat !== undefined && cfg.dataFormat !== 'channelsLast') throw unsupported(`layer ${layer.name}: dataFormat ${String(cfg.dataFormat)}`);
        const dilation = pair(cfg.dilationRate ?? 1);
        const strides = pair(cfg.strides);
        const [kh, kw] = pair(cfg.kernelSize);
        const [kernel, bias] = w;
        if (!kernel) throw unsupported(`layer ${layer.name}: a Conv2D layer without a kernel`);
        const [, , cin, cout] = kernel.shape as [number, number, number, number];
        toNchw();
        const k = weight(`${layer.name}_kernel`, [cout, cin, kh, kw], hwioToOihw(kernel.values, kh, kw, cin, cout), true);
        const inputs = [cur, k, ...(bias ? [weight(`${layer.name}_bias`, bias.shape, bias.values, false)] : [])];
        add(
          'Conv',
          inputs,
          [
            { name: 'kernel_shape', ints: [kh, kw] },
            { name: 'strides', ints: strides },
            { name: 'dilations', ints: dilation },
            ...padding(cfg.padding, layer.name),
          ],
          layer.name,
        );
        shape = [outSize(shape[0]!, kh, strides[0], dilation[0], cfg.padding), outSize(shape[1]!, kw, strides[1], dilation[1], cfg.padding), cout];
        activate(cfg.activation as Activation, layer.name);
        break;
      }
      case 'MaxPooling2D': {
        if (shape.length !== 3) throw unsupported(`layer ${layer.name}: MaxPooling2D needs [h, w, c] inputs`);
        const pool = pair(cfg.poolSize);
        const strides = pair(cfg.strides ?? cfg.poolSize);
        toNchw();
        add('MaxPool', [cur], [{ name: 'kernel_shape', ints: pool }, { name: 'strides', ints: strides }, ...padding(cfg.padding, layer.name)], layer.name);
        shape = [outSize(shape[0]!, pool[0], strides[0], 1, cfg.padding), outSize(shape[1]!, pool[1], strides[1], 1, cfg.padding), shape[2]!];
        lastActivation = 'linear';
        break;
      }
      default:
        throw unsupported(`layer ${layer.name}: ${kind} layers do not convert (supported: Dense, Flatten, Reshape, Conv2D, MaxPooling2D, Activation, Dropout)`);
    }
  }
  toNhwc();
  // Name the last value as the graph output.
  const last = nodes[nodes.length - 1];
  if (!last) throw unsupported('the model has no layer that computes anything');
  last.outputs = [outputName];
  const numClasses = shape[shape.length - 1]!;
  const bytes = encodeModel({
    irVersion: 8,
    opset: ONNX_OPSET,
    producerName: TFJS_TO_ONNX_PRODUCER,
    producerVersion: TFJS_TO_ONNX_VERSION,
    graph: {
      name: model.name,
      nodes,
      initializers: inits,
      inputs: [{ name: inputName, elemType: OnnxDataType.FLOAT, shape: ['batch', ...(sampleShape as number[])] }],
      outputs: [{ name: outputName, elemType: OnnxDataType.FLOAT, shape: ['batch', ...shape] }],
    },
  });
  return {
    bytes,
    inputName,
    outputName,
    sampleShape: sampleShape as number[],
    numClasses,
    outputKind: lastActivation === 'softmax' ? 'probabilities' : 'logits',
    opset: ONNX_OPSET,
  };
}

/**
 * Asymmetric per-tensor uint8: w ≈ (q − zeroPoint) × scale, with the range widened to include 0
 * so that 0 (pruned weights) is exact.
 */
export function quantizeUint8(values: Float32Array): { values: Uint8Array; scale: number; zeroPoint: number } {
  let lo = 0;
  let hi = 0;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const scale = Math.fround(hi > lo ? (hi - lo) / 255 : 1);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  const q = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) q[i] = Math.min(255, Math.max(0, Math.round(values[i]! / scale + zeroPoint)));
  return { values: q, scale, zeroPoint };
}

function hwioToOihw(v: Float32Array, kh: number, kw: number, cin: number, cout: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let h = 0; h < kh; h++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) out[((o * cin + i) * kh + h) * kw + x] = v[((h * kw + x) * cin + i) * cout + o]!;
  return out;
}

function pair(v: unknown): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0] as number, v[1] as number];
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === 'number') return [v[0], v[0]];
  throw unsupported(`a size of ${JSON.stringify(v)}`);
}

/** TF's 'same' puts the extra padding at the end: ONNX SAME_UPPER. */
function padding(p: unknown, layer: string): OnnxAttribute[] {
  if (p === 'valid' || p === undefined) return [{ name: 'pads', ints: [0, 0, 0, 0] }];
  if (p === 'same') return [{ name: 'auto_pad', string: 'SAME_UPPER' }];
  throw unsupported(`layer ${layer}: padding ${String(p)}`);
}

function outSize(n: number, k: number, s: number, d: number, p: unknown): number {
  const eff = (k - 1) * d + 1;
  return p === 'same' ? Math.ceil(n / s) : Math.floor((n - eff) / s) + 1;
}

function floatBytes(v: Float32Array): Uint8Array {
  const out = new Uint8Array(v.length * 4);
  const view = new DataView(out.buffer);
  v.forEach((x, i) => view.setFloat32(i * 4, x, true));
  return out;
}

function int64Bytes(v: number[]): Uint8Array {
  const out = new Uint8Array(v.length * 8);
  const view = new DataView(out.buffer);
  v.forEach((x, i) => view.setBigInt64(i * 8, BigInt(x), true));
  return out;
}

function unsupported(what: string): DataError {
  return new DataError(`cannot convert the model to ONNX: ${what}`, { code: 'ONNX_EXPORT_UNSUPPORTED' });
}
