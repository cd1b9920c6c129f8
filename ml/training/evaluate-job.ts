import { loadTf } from '../backend.js';
import { readDataset } from '../data/dataset.js';
import { loadModel } from '../models/io.js';
import type { EvaluateJob, EvaluateResult } from './jobs.js';
import { labelled } from './pretrain-job.js';
import { evaluate } from './train-loop.js';

/** Loss and accuracy of a saved model on one split of a dataset. */
export async function runEvaluateJob(job: EvaluateJob): Promise<EvaluateResult> {
  const { tf, backend } = await loadTf(job.backend ? { prefer: job.backend } : {});
  const ds = await readDataset(job.datasetDir, { splits: ['train', 'validation', job.split] });
  const data = labelled(ds, ds.splits[job.split]);
  const model = await loadModel(tf, job.modelDir);
  model.compile({ optimizer: 'adam', loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'] });
  const r = evaluate(tf, model, data);
  return { backend, loss: r.loss, accuracy: r.accuracy, count: data.y.length };
}
