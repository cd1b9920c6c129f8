import { z } from 'zod';
import { declaredCostSchema, priceSheetOverrideSchema, revenueModelSchema } from '../../../ledger/schemas.js';

export const roiLedgerParamsSchema = z
  .object({
    /** Overrides fields of the configured price sheet for this pipeline. */
    priceSheet: priceSheetOverrideSchema.optional(),
    /** Costs the meters cannot see: data bought, labelling, people's time. */
    costs: z.array(declaredCostSchema).max(1000).optional(),
    /** What the run is expected to return. */
    revenue: revenueModelSchema,
  })
  .strict();
export type RoiLedgerParams = z.infer<typeof roiLedgerParamsSchema>;
