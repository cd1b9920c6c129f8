import type * as TF from '@tensorflow/tfjs';
import { DataError } from '../data/data-error.js';
import type { Tf } from './mlp.js';

export type LayerActivation = 'relu' | 'tanh' | 'sigmoid' | 'elu' | 'linear';

/** One hidden layer of a layer-spec model; the dense softmax output is always added last. */
export type LayerSpec =
  | { type: 'conv2d'; filters: number; kernelSize: number; strides: number; padding: 'same' | 'valid'; activation: LayerActivation }
  | { type: 'maxPooling2d'; poolSize: number; strides?: number }
  | { type: 'flatten' }
  | { type: 'dense'; units: number; activation: LayerActivation }
  | { type: 'dropout'; rate: number };

export interface LayersModelSpec {
  /** Shape of one example: [h, w] (one channel) or [h, w, c] for conv layers; anything for dense-only stacks. */
  inputShape: number[];
  layers: LayerSpec[];
  numClasses: number;
  /** Seeds the initialisers and dropout, so the same spec gives the same starting weights. */
  seed: number;
}

/**
 * The order rules a layer list must follow, as messages naming the layer (`layers[2]: …`): image
 * layers (conv2d, maxPooling2d) before any flatten or dense; at most one flatten. Empty when fine.
 * Pure: the params schema uses it too.
 */
export function layerOrderProblems(layers: LayerSpec[]): { index: number; message: string }[] {
  const out: { index: number; message: string }[] = [];
  let flat = -1;
  layers.forEach((l, i) => {
    if ((l.type === 'conv2d' || l.type === 'maxPooling2d') && flat >= 0)
      out.push({ index: i, message: `${l.type} must come before any flatten or dense layer (layers[${flat}] is ${layers[flat]!.type})` });
    if (l.type === 'flatten' && flat >= 0 && layers[flat]!.type === 'flatten') out.push({ index: i, message: 'a second flatten' });
    if (l.type === 'flatten' || l.type === 'dense') flat = flat >= 0 ? flat : i;
  });
  if (!layers.some((l) => l.type === 'conv2d' || l.type === 'dense')) out.push({ index: 0, message: 'the layers need at least one conv2d or dense layer' });
  return out;
}

/**
 * Builds (does not compile) a Sequential classifier from layer specs: a reshape to one channel when
 * the input is [h, w] and the stack starts with image layers, the layers in order, a flatten before the
 * first dense layer when none was given, and a dense softmax over `numClasses`. A stack that does
 * not fit the input (e.g. conv2d on 1-D rows, or a spatial size shrinking below 1) is a DataError
 * naming the layer. Pure: only tfjs objects.
 */
export function buildFromLayers(tf: Tf, spec: LayersModelSpec): TF.LayersModel {
  const problems = layerOrderProblems(spec.layers);
  if (problems.length) throw new DataError(problems.map((p) => `model.layers[${p.index}]: ${p.message}`).join('; '), { code: 'MODEL_LAYERS_INVALID' });
  const model = tf.sequential({ name: 'layers' });
  const image = spec.layers.some((l) => l.type === 'conv2d' || l.type === 'maxPooling2d');
  let shape = [...spec.inputShape];
  const first = { inputShape: spec.inputShape };
  let started = false;
  const input = () => {
    if (started) return {};
    started = true;
    return first;
  };
  if (image) {
    if (shape.length === 2) {
      shape = [shape[0]!, shape[1]!, 1];
      model.add(tf.layers.reshape({ ...input(), targetShape: shape, name: 'to_image' }));
    } else if (shape.length !== 3) {
      throw new DataError(
        `model.layers: conv2d and maxPooling2d need image rows ([height, width] or [height, width, channels]); this dataset's rows have shape [${spec.inputShape.join(', ')}]`,
        { code: 'MODEL_DATASET_MISMATCH' },
      );
    }
  }
  let flat = !image && shape.length === 1;
  const spatial = (i: number, name: string, size: number, stride: number, padding: 'same' | 'valid') => {
    const out = [0, 1].map((d) => (padding === 'same' ? Math.ceil(shape[d]! / stride) : Math.floor((shape[d]! - size) / stride) + 1));
    if (out.some((n) => n < 1))
      throw new DataError(`model.layers[${i}]: ${name} (size ${size}, ${padding}) does not fit its ${shape[0]}×${shape[1]} input`, {
        code: 'MODEL_LAYERS_INVALID',
      });
    return out as [number, number];
  };
  let k = 0;
  spec.layers.forEach((l, i) => {
    const init = () => tf.initializers.glorotUniform({ seed: spec.seed + k++ });
    switch (l.type) {
      case 'conv2d': {
        const [h, w] = spatial(i, 'conv2d', l.kernelSize, l.strides, l.padding);
        model.add(
          tf.layers.conv2d({
            ...input(),
            filters: l.filters,
            kernelSize: l.kernelSize,
            strides: l.strides,
            padding: l.padding,
            activation: l.activation,
            kernelInitializer: init(),
            name: `conv_${i + 1}`,
          }),
        );
        shape = [h, w, l.filters];
        break;
      }
      case 'maxPooling2d': {
        const strides = l.strides ?? l.poolSize;
        const [h, w] = spatial(i, 'maxPooling2d', l.poolSize, strides, 'valid');
        model.add(tf.layers.maxPooling2d({ ...input(), poolSize: l.poolSize, strides, name: `pool_${i + 1}` }));
        shape = [h, w, shape[2]!];
        break;
      }
      case 'flatten':
        model.add(tf.layers.flatten({ ...input(), name: `flatten_${i + 1}` }));
        flat = true;
        break;
      case 'dense':
        if (!flat) {
          model.add(tf.layers.flatten({ ...input(), name: `flatten_${i + 1}` }));
          flat = true;
        }
        model.add(tf.layers.dense({ ...input(), units: l.units, activation: l.activation, kernelInitializer: init(), name: `dense_${i + 1}` }));
        break;
      case 'dropout':
        model.add(tf.layers.dropout({ ...input(), rate: l.rate, seed: spec.seed + 1000 + i, name: `dropout_${i + 1}` }));
        break;
    }
  });
  if (!flat) model.add(tf.layers.flatten({ name: 'flatten_out' }));
  model.add(
    tf.layers.dense({
      units: spec.numClasses,
      activation: 'softmax',
      kernelInitializer: tf.initializers.glorotUniform({ seed: spec.seed + k }),
      name: 'output',
    }),
  );
  return model;
}
