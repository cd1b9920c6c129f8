// GraphQL SDL of the ledger module: a run's ledger entries, a pipeline's ROI over a period, and
// PipelineRun.roi. Every type, field, argument and enum value is described
// (test/api/schema-lint.test.ts lints it).
export const ledgerTypeDefs = /* GraphQL */ `
  "What a ledger entry books."
  enum LedgerEntryKind {
    "A cost: compute priced per device-hour, storage, and the costs the run declares (people, data acquisition, labelling, …)."
    COST
    "Revenue the run's revenue model expects (e.g. a contract value); booked by the ledger stage."
    EXPECTED_REVENUE
    "Revenue earned by predictions actually served by a model version the run produced."
    REALISED_REVENUE
  }

  """
  One append-only ledger entry. Money is an exact decimal string in the entry's currency (at least
  2 decimal places, up to 6, e.g. 3.9011); entries are never changed: a correction is a reversal
  plus a new version.
  """
  type LedgerEntry {
    """
    Idempotency key and version: run|stage|kind|category[|n]#version, e.g.
    pipeline/mnist-default/7f3k2|train|cost|cpu#1. A reversal's id ends in ~reversal.
    """
    id: ID!
    "The run the entry belongs to (its workflow id)."
    runId: ID!
    "The run's pipeline name."
    pipeline: String!
    "The stage whose compute or storage it prices; the ledger stage for declared costs and expected revenue; serving for realised revenue from predictions."
    stageId: String!
    "Cost, expected revenue or realised revenue."
    kind: LedgerEntryKind!
    "What it is for: cpu, gpu, storage, data-acquisition, labelling, people, other, contract or predictions."
    category: String!
    "The amount as an exact decimal string, e.g. 0.0125; negative for a reversal."
    amount: String!
    "ISO 4217 currency code of amount, e.g. USD."
    currency: String!
    "How much, as a decimal string in unit (e.g. 0.0012500 cpu-hours, 2.5 hours, a prediction count, 1 item); null when the entry has none."
    quantity: String
    "Unit of quantity: cpu-hour, gpu-hour, GB, hour, item, contract or prediction; null when the entry has none."
    unit: String
    "Price per unit as text in currency, e.g. 0.048, 1.5 per 1000 or 0.02 per GB-month × 1 months; null when the entry has none."
    unitPrice: String
    "Human-readable explanation, e.g. train: 2 attempt(s), CPU device time."
    description: String!
    "On a reversing entry: the id of the entry it cancels; null otherwise."
    reverses: ID
    "When the booked cost or revenue happened: booking time for costs and expected revenue, serving time for realised revenue. Periods filter on it."
    occurredAt: DateTime!
    "When the entry was written to the ledger."
    bookedAt: DateTime!
  }

  """
  Cost, revenue and ROI = (R − C) / C of one run. Money as exact decimal strings; roi as a decimal
  ratio with 4 places (0.2500 = 25 %), null when cost is zero (see explanation). revenue/roi use the
  expected revenue the run's revenue model declares; realisedRevenue/realisedRoi use predictions
  actually served.
  """
  type Roi {
    "ISO 4217 currency code of every amount here, e.g. USD."
    currency: String!
    "Total cost (net of reversals)."
    cost: String!
    "Total expected revenue (net of reversals)."
    revenue: String!
    "(revenue − cost) / cost as a 4-place decimal ratio, e.g. 0.2500 for 25 %; null when cost is zero."
    roi: String
    "Total realised revenue from served predictions so far."
    realisedRevenue: String!
    "(realisedRevenue − cost) / cost as a 4-place decimal ratio; null when cost is zero."
    realisedRoi: String
    "Why roi is null (cost is zero); null when roi is set."
    explanation: String
  }

  "Cost of one group of ledger entries (a stage, or a resource/category)."
  type RoiBreakdown {
    "The group: a stage id (byStage) or a category such as cpu, gpu, storage or people (byResource)."
    key: String!
    "Its total cost as an exact decimal string (net of reversals)."
    cost: String!
  }

  """
  A pipeline's cost, revenue and ROI over a period, from the ledger entries of all its runs that
  occurred in [from, to). Money as exact decimal strings, ratios as 4-place decimals.
  """
  type RoiReport {
    "The pipeline name asked for."
    pipeline: String!
    "Start of the period (inclusive), as asked; null when unbounded."
    from: DateTime
    "End of the period (exclusive), as asked; null when unbounded."
    to: DateTime
    "Number of runs with entries in the period."
    runs: Int!
    "ISO 4217 currency code of the amounts; null when there are no entries."
    currency: String
    "Total cost in the period."
    cost: String!
    "Total expected revenue in the period."
    revenue: String!
    "(revenue − cost) / cost as a 4-place decimal ratio; null when cost is zero."
    roi: String
    "Total realised revenue (served predictions) in the period."
    realisedRevenue: String!
    "(realisedRevenue − cost) / cost as a 4-place decimal ratio; null when cost is zero."
    realisedRoi: String
    "Why roi is null (cost is zero); null when roi is set."
    explanation: String
    "Cost per stage id, ordered by stage id."
    byStage: [RoiBreakdown!]!
    "Cost per resource or category (cpu, gpu, storage, people, …), ordered by name."
    byResource: [RoiBreakdown!]!
  }

  extend type Query {
    "A run's ledger entries in booking order, reversals included; empty when the run has none (or does not exist)."
    ledger(
      "The run's id (its workflow id)."
      runId: ID!
    ): [LedgerEntry!]!
    """
    A pipeline's cost, revenue and ROI from its entries that occurred in [from, to), with cost per
    stage and per resource. Errors: BAD_INPUT (from is not before to), BAD_DATE (not a date-time),
    LEDGER_CURRENCY_MISMATCH (entries in several currencies).
    """
    roi(
      "The pipeline name."
      pipeline: String!
      "Start of the period, inclusive; from the first entry when omitted."
      from: DateTime
      "End of the period, exclusive; up to now when omitted."
      to: DateTime
    ): RoiReport!
  }

  extend type PipelineRun {
    """
    The run's cost, revenue and ROI from its ledger entries; null until something is booked for it
    (the run's ledger stage books its costs and expected revenue). Errors: LEDGER_CURRENCY_MISMATCH.
    """
    roi: Roi
  }
`;
