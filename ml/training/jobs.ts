import type { BackendName } from '../backend.js';
import type { LayerSpec } from '../models/layers.js';
import type { TrainLoopName } from './train-loop.js';

/** Architecture params shared by the builders and the stage params. */
export interface ModelParams {
  hiddenUnits: number[];
  activation: 'relu' | 'tanh' | 'sigmoid' | 'elu';
  dropout: number;
  /** When set, the hidden layers instead of hiddenUnits/activation/dropout (ml/models/layers.ts). */
  layers?: LayerSpec[];
}

export interface PretrainJob {
  kind: 'pretrain';
  backend?: BackendName;
  datasetDir: string;
  /** Final model folder (written at the end). */
  outDir: string;
  /** Per-epoch checkpoints go to `<checkpointDir>/epoch-NNNN`. */
  checkpointDir: string;
  /** Resume from this checkpoint folder, which holds the model after `epoch`. */
  resume?: { epoch: number; dir: string };
  model: ModelParams;
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  /** Force a training loop (default: the step loop when the model allows it). */
  loop?: TrainLoopName;
}

export interface PretrainProgress {
  epoch: number;
  /** Absolute folder of the checkpoint written after this epoch. */
  checkpointDir: string;
  trainLoss: number;
  trainAccuracy: number;
  valLoss: number;
  valAccuracy: number;
  samplesPerSec: number;
}

export interface PretrainResult {
  backend: BackendName;
  resumedFromEpoch: number;
  /** The loop that trained: the step loop, or model.fit (then `fitBecause` says why). */
  trainLoop: TrainLoopName;
  fitBecause?: string;
  history: PretrainProgress[];
  test: { loss: number; accuracy: number; count: number };
  trainSamples: number;
  trainSeconds: number;
  samplesPerSec: number;
  parameters: number;
}

export interface ReplicaJob {
  kind: 'replica';
  backend?: BackendName;
  datasetDir: string;
  /** The input model folder (starting weights; may carry masks). */
  modelDir: string;
  /** Shared folder of the data-parallel stage: `round-NNNNN/replica-<i>.bin`, `round-NNNNN/avg.bin`. */
  syncDir: string;
  /** Where this replica writes its final (averaged) model. */
  outDir: string;
  replica: { index: number; count: number };
  epochs: number;
  batchSize: number;
  learningRate: number;
  syncEverySteps: number;
  seed: number;
  /** Give up waiting for the other replicas after this long (a retryable failure). */
  syncTimeoutMs: number;
  /** Resume after this averaged round (its avg.bin exists). */
  resumeRound?: number;
}

export interface ReplicaProgress {
  round: number;
  rounds: number;
  /** Absolute path of the averaged weights of `round`. */
  checkpoint: string;
  waitingForPeers?: boolean;
  /** While waiting at a round's barrier: the round, the replicas (indexes) not arrived yet, and since when this one waits. */
  barrier?: { round: number; waitingFor: number[]; since: string };
}

export interface ReplicaResult {
  backend: BackendName;
  trainLoop: TrainLoopName;
  fitBecause?: string;
  /** Whether Adam's moments were averaged with the weights at each sync (the step loop's; not under model.fit). */
  averagedOptimizerState?: boolean;
  resumedFromRound: number;
  rounds: number;
  steps: number;
  samples: number;
  trainSeconds: number;
  waitSeconds: number;
  samplesPerSec: number;
  shardSize: number;
  maskedWeights: number;
  prunedWeights: number;
  validation: { loss: number; accuracy: number };
}

export interface EvaluateJob {
  kind: 'evaluate';
  backend?: BackendName;
  datasetDir: string;
  modelDir: string;
  split: 'test' | 'validation';
}

export interface EvaluateResult {
  backend: BackendName;
  loss: number;
  accuracy: number;
  count: number;
}

/** Masked fine-tune after pruning: pruned weights stay zero (weight ← weight × mask after each step). */
export interface FineTuneJob {
  kind: 'fine-tune';
  backend?: BackendName;
  datasetDir: string;
  /** The pruned float32 model folder, with its masks (masks.json + masks.bin). */
  modelDir: string;
  /** Where the fine-tuned float32 weights go (input weight order, masks re-applied). */
  outDir: string;
  /** Per-epoch checkpoints (with optimizer state) go to `<checkpointDir>/epoch-NNNN`. */
  checkpointDir: string;
  /** Resume from this checkpoint folder, which holds the model after `epoch`. */
  resume?: { epoch: number; dir: string };
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Train on at most this many rows of the train split. */
  samples?: number;
  /** Seeds each epoch's shuffle (fineTuneOrder); default DEFAULT_FINE_TUNE_SEED. */
  seed?: number;
  /**
   * Gradual pruning: `modelDir` holds the unpruned model (its masks, if any, are ignored); the
   * sparsity rises from 0 to `target` on a polynomial schedule (ml/compression/schedule.ts) reached
   * at `endFraction` of the steps, masks recomputed every `frequency` steps. The final masks are
   * written beside `outDir`. Without it the masks beside `modelDir` are kept as they are (one-shot).
   */
  prune?: { target: number; frequency: number; endFraction: number };
}

/** Sent after every train step, and after every epoch with the checkpoint just written. */
export interface FineTuneProgress {
  /** Epochs finished (and checkpointed) so far. */
  epoch: number;
  /** Train steps so far, over all epochs. */
  step: number;
  /** Absolute folder of the newest checkpoint (the one of `epoch`), when there is one. */
  checkpointDir?: string;
  loss: number;
  /** True on the line sent when an epoch ends. */
  epochDone?: boolean;
}

export interface FineTuneResult {
  backend: BackendName;
  /** The step loop, or model.fit's trainOnBatch when the model needs it (then `fitBecause` says why). */
  trainLoop: TrainLoopName;
  fitBecause?: string;
  resumedFromEpoch: number;
  epochs: number;
  /** Train steps over all epochs (resumed ones included). */
  steps: number;
  /** Step loop: the last epoch's mean loss; trainOnBatch: the last batch's loss. */
  lastLoss: number;
  /** The gradual schedule that pruned (absent: one-shot masks from the input). */
  schedule?: { kind: 'gradual'; endStep: number; frequency: number; finalSparsity: number };
  shuffleSeed?: number;
}

export type MlJob = PretrainJob | ReplicaJob | EvaluateJob | FineTuneJob;
