import { z } from 'zod';
import { formatMoneyExact, parseMoney } from './money.js';

/**
 * A non-negative amount of money: a decimal string ("0.0425") or a JSON number written as a
 * plain decimal (0.0425), at most 6 decimal places. Parsed to its canonical decimal string, so
 * nothing downstream ever holds money in a float.
 */
export const moneySchema = z.union([z.string(), z.number()]).transform((value, ctx) => {
  try {
    const micros = parseMoney(value);
    if (micros < 0n) throw new RangeError('must not be negative');
    return formatMoneyExact(micros);
  } catch (err) {
    ctx.addIssue({
      code: 'custom',
      message: `must be a non-negative decimal amount with at most 6 decimal places, e.g. "0.0425" (got ${JSON.stringify(value)}${err instanceof RangeError && err.message === 'must not be negative' ? ', which is negative' : ''})`,
    });
    return z.NEVER;
  }
});
export type Money = z.infer<typeof moneySchema>;

/** A non-negative decimal quantity (hours, …), same syntax as money. */
export const quantitySchema = moneySchema;

const currencySchema = z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 currency code such as "USD"');

/**
 * What compute and storage cost. `cpuHour` prices an hour of CPU time (user + system, the
 * worker's and its child processes'); `gpuHour` an hour of one GPU actually assigned to an
 * attempt. What a plugin declares (cpu or gpu queue) does not change the price. Bytes a run
 * keeps are priced per GB-month (1 GB = 10^9 bytes) for `retentionMonths` months.
 */
export const priceSheetSchema = z
  .object({
    currency: currencySchema,
    compute: z.object({ cpuHour: moneySchema, gpuHour: moneySchema }).strict(),
    storage: z.object({ gbMonth: moneySchema, retentionMonths: z.number().int('must be a whole number of months').min(0).max(1200) }).strict(),
  })
  .strict();
export type PriceSheet = z.infer<typeof priceSheetSchema>;

/** A partial price sheet a pipeline spec may give to override the configured one. */
export const priceSheetOverrideSchema = z
  .object({
    currency: currencySchema.optional(),
    compute: z.object({ cpuHour: moneySchema.optional(), gpuHour: moneySchema.optional() }).strict().optional(),
    storage: z
      .object({
        gbMonth: moneySchema.optional(),
        retentionMonths: z.number().int('must be a whole number of months').min(0).max(1200).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type PriceSheetOverride = z.infer<typeof priceSheetOverrideSchema>;

export const declaredCostCategories = ['data-acquisition', 'labelling', 'people', 'other'] as const;

/**
 * A cost that is not metered: data bought, labelling, people's time. Either a fixed `amount`, or
 * `hours` × `hourlyRate` (people time).
 */
export const declaredCostSchema = z
  .object({
    category: z.enum(declaredCostCategories),
    description: z.string().min(1).max(500),
    amount: moneySchema.optional(),
    hours: quantitySchema.optional(),
    hourlyRate: moneySchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const fixed = c.amount !== undefined;
    const timed = c.hours !== undefined || c.hourlyRate !== undefined;
    if (fixed && timed) ctx.addIssue({ code: 'custom', path: ['amount'], message: 'give either amount, or hours and hourlyRate, not both' });
    else if (!fixed && !timed) ctx.addIssue({ code: 'custom', path: ['amount'], message: 'required (or give hours and hourlyRate)' });
    else if (timed && c.hours === undefined) ctx.addIssue({ code: 'custom', path: ['hours'], message: 'required with hourlyRate' });
    else if (timed && c.hourlyRate === undefined) ctx.addIssue({ code: 'custom', path: ['hourlyRate'], message: 'required with hours' });
  });
export type DeclaredCost = z.infer<typeof declaredCostSchema>;

/**
 * What the run is expected to return. `contract`: a fixed contract value. `per-prediction`:
 * expectedPredictions × pricePer1000 / 1000 over the horizon; predictions actually served are
 * booked as realised revenue at pricePer1000.
 */
export const revenueModelSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('contract'),
      value: moneySchema,
      horizonDays: z.number().int().positive().optional(),
      description: z.string().max(500).optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('per-prediction'),
      pricePer1000: moneySchema,
      expectedPredictions: z.number().int('must be a whole number').nonnegative().max(Number.MAX_SAFE_INTEGER),
      horizonDays: z.number().int().positive(),
      description: z.string().max(500).optional(),
    })
    .strict(),
]);
export type RevenueModel = z.infer<typeof revenueModelSchema>;

const seconds = z.number().finite().nonnegative();

/**
 * What one attempt of one stage (or one replica of it) used. Recorded after every attempt.
 * Priced by what was used: `cpuSeconds` (the worker's and its children's CPU time) at the CPU
 * rate, and — only when the attempt held GPUs (`gpuDevices`) — `deviceSeconds` × the number of
 * those GPUs at the GPU rate. The plugin's declared `resource` is recorded, not priced.
 */
export const stageUsageSchema = z.object({
  runId: z.string().min(1),
  pipeline: z.string().min(1),
  stageId: z.string().min(1),
  plugin: z.string().min(1),
  /** Temporal's attempt number, 1 on the first. */
  attempt: z.number().int().positive(),
  /** Replica index for data-parallel stages; omit for a plain stage or the reduce. */
  replica: z.number().int().nonnegative().optional(),
  /**
   * Temporal activity id (`stage:<id>[#<round>][:replica-<i>|:reduce]`): with the workflow run id
   * and the attempt it keys the usage, so an operator retry (a new round) or a reset (a new
   * workflow run) is a new line while a repeated record of one attempt is not. Default:
   * `stage:<stageId>[:replica-<i>]`.
   */
  activityId: z.string().min(1).max(500).optional(),
  /** Temporal's run id of the workflow execution (changes on reset); default ''. */
  workflowRunId: z.string().max(200).optional(),
  resource: z.enum(['cpu', 'gpu']),
  wallSeconds: seconds,
  cpuSeconds: seconds,
  /** Seconds the attempt held its device(s); usually = wallSeconds. Priced only with `gpuDevices`. */
  deviceSeconds: seconds,
  /** The GPUs the attempt held (device ids); empty or absent: none. */
  gpuDevices: z.array(z.string().min(1).max(100)).max(64).optional(),
  /** Bytes of the attempt's outputs. */
  bytesWritten: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  /**
   * Bytes the run keeps for this stage after the attempt: its outputs, checkpoints and round
   * folders, and the registry exports it wrote. Storage is priced on the stage's largest value.
   */
  bytesKept: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  succeeded: z.boolean(),
  /**
   * Usage of an attempt still running, written at every heartbeat so a killed worker loses at
   * most one interval. Under the same usage key, a later partial replaces an earlier one and the
   * final record (partial absent or false) replaces them all; nothing replaces a final record.
   */
  partial: z.boolean().optional(),
});
export type StageUsage = z.infer<typeof stageUsageSchema>;

/** Predictions served by a deployed model, booked as realised revenue of the run that produced it. */
export const predictionsRecordSchema = z.object({
  model: z.string().min(1),
  version: z.union([z.string().min(1), z.number().int()]).transform(String),
  runId: z.string().min(1),
  count: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  at: z.union([z.date(), z.string().datetime({ offset: true })]).optional(),
  /** Idempotency key of this batch (e.g. `<server id>/<flush seq>`); recording the same key twice books once. */
  key: z.string().min(1).max(300).optional(),
});
export type PredictionsRecord = z.input<typeof predictionsRecordSchema>;
