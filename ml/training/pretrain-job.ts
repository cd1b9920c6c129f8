import type * as TF from '@tensorflow/tfjs';
import { loadTf } from '../backend.js';
import { inputsOf, readDataset, type Dataset, type DatasetSplit } from '../data/dataset.js';
import { loadModel, saveModel } from '../models/io.js';
import { buildFromLayers } from '../models/layers.js';
import { buildMlp, compileClassifier } from '../models/mlp.js';
import { writeCheckpoint } from './checkpoints.js';
import type { PretrainJob, PretrainProgress, PretrainResult } from './jobs.js';
import { evaluate, trainEpochs, type LabelledArrays } from './train-loop.js';

export function labelled(ds: Dataset, s: DatasetSplit | undefined): LabelledArrays {
  if (!s) return { x: new Float32Array(0), y: new Uint8Array(0), featureShape: ds.featureShape };
  return { x: inputsOf(ds, s), y: s.y, featureShape: ds.featureShape };
}

/** Trains the classifier in this process (the child), checkpointing after every epoch. */
export async function runPretrainJob(job: PretrainJob, progress: (p: PretrainProgress) => void): Promise<PretrainResult> {
  const { tf, backend } = await loadTf(job.backend ? { prefer: job.backend } : {});
  const ds = await readDataset(job.datasetDir);
  const train = labelled(ds, ds.splits.train);
  const validation = labelled(ds, ds.splits.validation);
  const test = labelled(ds, ds.splits.test);

  let fromEpoch = 0;
  let model: TF.LayersModel;
  if (job.resume) {
    model = await loadModel(tf, job.resume.dir);
    // A checkpoint carries its training config and Adam state; compile only if it did not.
    if (!model.optimizer) compileClassifier(tf, model, { learningRate: job.learningRate });
    fromEpoch = job.resume.epoch;
  } else {
    const { layers, ...mlp } = job.model;
    model = layers
      ? buildFromLayers(tf, { inputShape: ds.featureShape, numClasses: ds.numClasses, seed: job.seed, layers })
      : buildMlp(tf, { inputShape: ds.featureShape, numClasses: ds.numClasses, seed: job.seed, ...mlp });
    compileClassifier(tf, model, { learningRate: job.learningRate });
  }
  model.setUserDefinedMetadata({ capstan: { inputShape: ds.featureShape, numClasses: ds.numClasses, normalization: ds.normalization } });

  const history: PretrainProgress[] = [];
  let trainSeconds = 0;
  let trainSamples = 0;
  const trained = await trainEpochs(
    tf,
    model,
    { train, validation },
    {
      epochs: job.epochs,
      fromEpoch,
      batchSize: job.batchSize,
      seed: job.seed,
      ...(job.loop ? { loop: job.loop } : {}),
      onEpoch: async (s) => {
        trainSeconds += s.seconds;
        trainSamples += train.y.length;
        const dir = await writeCheckpoint(model, job.checkpointDir, s.epoch);
        const p: PretrainProgress = {
          epoch: s.epoch,
          checkpointDir: dir,
          trainLoss: s.trainLoss,
          trainAccuracy: s.trainAccuracy,
          valLoss: s.valLoss,
          valAccuracy: s.valAccuracy,
          samplesPerSec: s.samplesPerSec,
        };
        history.push(p);
        progress(p);
      },
    },
  );

  const t = evaluate(tf, model, test);
  await saveModel(model, job.outDir);
  return {
    backend,
    resumedFromEpoch: fromEpoch,
    trainLoop: trained.loop,
    ...(trained.fitBecause ? { fitBecause: trained.fitBecause } : {}),
    history,
    test: { loss: t.loss, accuracy: t.accuracy, count: test.y.length },
    trainSamples,
    trainSeconds,
    samplesPerSec: trainSeconds > 0 ? trainSamples / trainSeconds : 0,
    parameters: model.countParams(),
  };
}
