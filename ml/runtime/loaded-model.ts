// One interface over the runtimes that serve and measure models: TensorFlow.js for the tfjs
// layers format, ONNX Runtime for ONNX. The deploy gates, the model server and the benchmarks
// only talk to a LoadedModel, so both formats are measured and served the same way.

export const MODEL_FORMATS = ['tfjs-layers', 'onnx'] as const;
/** How a model folder is stored: `tfjs-layers` (model.json + weight shards) or `onnx` (model.onnx + capstan-model.json). */
export type ModelFormat = (typeof MODEL_FORMATS)[number];

export interface ModelOutput {
  /** n × classes class probabilities, row by row. */
  probabilities: Float32Array;
  classes: number;
}

export interface LoadedModel {
  readonly format: ModelFormat;
  /** What runs it, e.g. "tfjs 4.22.0 (wasm)" or "onnxruntime-node 1.30.0 (cpu)". */
  readonly runtime: string;
  /** One sample's shape without the batch dimension, e.g. [28, 28]. */
  readonly sampleShape: number[];
  /** Classes the model outputs; undefined when its graph does not say. */
  readonly numClasses: number | undefined;
  /** Class names in class order, when the model records them (ONNX: capstan-model.json's labels). */
  readonly labels?: readonly string[];
  /** Class probabilities for `n` samples given flat (n × prod(sampleShape) float32 values, as the model takes them). */
  predict(x: Float32Array, n: number): Promise<ModelOutput>;
  /** Frees the model (tensors, the ONNX Runtime session). Not to be called while a predict runs. */
  dispose(): Promise<void>;
}

/** prod(shape). */
export function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
