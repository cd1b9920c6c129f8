// The tfjs layers format behind the LoadedModel interface: tf.loadLayersModel on the backend
// loadTf chose, predictions read back as probabilities.
import type * as TF from '@tensorflow/tfjs';
import type { LoadedTf } from '../backend.js';
import { modelSampleShape } from '../evaluation/evaluate.js';
import { folderLoadHandler } from '../models/io.js';
import type { LoadedModel } from './loaded-model.js';

/** "tfjs 4.22.0 (wasm)". */
export function tfjsRuntimeName(loaded: LoadedTf): string {
  return `tfjs ${loaded.tf.version.tfjs} (${loaded.backend})`;
}

/** Wraps a layers model already in memory (the model is disposed with the wrapper). */
export function wrapTfjsModel(loaded: LoadedTf, net: TF.LayersModel): LoadedModel {
  const { tf } = loaded;
  const sampleShape = modelSampleShape(net);
  const out = net.outputs[0]?.shape;
  const last = out?.[out.length - 1];
  return {
    format: 'tfjs-layers',
    runtime: tfjsRuntimeName(loaded),
    sampleShape,
    numClasses: typeof last === 'number' ? last : undefined,
    async predict(x, n) {
      const y = tf.tidy(() => net.predict(tf.tensor(x, [n, ...sampleShape], 'float32')) as TF.Tensor);
      try {
        const classes = y.shape[y.shape.length - 1] ?? 1;
        return { probabilities: (await y.data()) as Float32Array, classes };
      } finally {
        y.dispose();
      }
    },
    async dispose() {
      net.dispose();
    },
  };
}

/** Loads a tfjs layers folder (model.json + weight shards) and warms it up. */
export async function loadTfjsModel(loaded: LoadedTf, dir: string): Promise<LoadedModel> {
  const { tf } = loaded;
  const net = await tf.loadLayersModel(folderLoadHandler(tf, dir));
  const model = wrapTfjsModel(loaded, net);
  try {
    // Warm up, so the first request does not pay for kernel set-up.
    tf.tidy(() => {
      net.predict(tf.zeros([1, ...model.sampleShape]));
    });
  } catch (e) {
    net.dispose();
    throw e;
  }
  return model;
}
