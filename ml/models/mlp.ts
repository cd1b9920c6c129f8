import type * as TF from '@tensorflow/tfjs';

export type Tf = typeof TF;

export interface MlpSpec {
  /** Shape of one example, e.g. [28, 28]; flattened first. */
  inputShape: number[];
  /** Units of each hidden dense layer. The seed model: [128]. */
  hiddenUnits: number[];
  activation: 'relu' | 'tanh' | 'sigmoid' | 'elu';
  /** Dropout after each hidden layer (0 = none). */
  dropout: number;
  numClasses: number;
  /** Seeds the weight initialisers, so the same spec gives the same starting weights. */
  seed: number;
}

export const seedMlpSpec: MlpSpec = { inputShape: [28, 28], hiddenUnits: [128], activation: 'relu', dropout: 0, numClasses: 10, seed: 42 };

/** Builds (does not compile) a flatten → dense… → softmax classifier. Pure: only tfjs objects. */
export function buildMlp(tf: Tf, spec: MlpSpec): TF.LayersModel {
  const model = tf.sequential({ name: 'mlp' });
  model.add(tf.layers.flatten({ inputShape: spec.inputShape, name: 'flatten' }));
  spec.hiddenUnits.forEach((units, i) => {
    model.add(
      tf.layers.dense({
        units,
        activation: spec.activation,
        kernelInitializer: tf.initializers.glorotUniform({ seed: spec.seed + i }),
        name: `dense_${i + 1}`,
      }),
    );
    if (spec.dropout > 0) model.add(tf.layers.dropout({ rate: spec.dropout, seed: spec.seed + 1000 + i, name: `dropout_${i + 1}` }));
  });
  model.add(
    tf.layers.dense({
      units: spec.numClasses,
      activation: 'softmax',
      kernelInitializer: tf.initializers.glorotUniform({ seed: spec.seed + spec.hiddenUnits.length }),
      name: 'output',
    }),
  );
  return model;
}

/** Adam + sparse categorical cross-entropy + accuracy, as the seed model. */
export function compileClassifier(tf: Tf, model: TF.LayersModel, opts: { learningRate: number }): void {
  model.compile({ optimizer: tf.train.adam(opts.learningRate), loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'] });
}
