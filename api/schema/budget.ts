// GraphQL SDL of the budget module: estimates before a run, budgets during it, and the realised-ROI
// watch after deployment. Every type, field, argument and enum value is described
// (test/api/schema-lint.test.ts lints it).
export const budgetTypeDefs = /* GraphQL */ `
  "Where an estimate's numbers come from."
  enum EstimateBasis {
    """
    Past runs of the same plugin version whose params equal this stage's except the params the
    plugin names as scaling (e.g. epochs, a sample limit), scaled linearly by those params and by
    input size; the median of the newest comparable runs (up to 5), the range their min–max
    (widened ±25 % with fewer than 3 runs).
    """
    HISTORY
    "No comparable past run: the plugin's own estimate for these params, with a range of ×0.5–×2."
    PLUGIN
    "No comparable past run and no estimate from the plugin: no number is given."
    UNKNOWN
  }

  "Low, expected and high money amounts as exact decimal strings."
  type MoneyRange {
    "The expected amount (the median of the comparable runs, scaled)."
    expected: String!
    "The low end of the range."
    low: String!
    "The high end of the range."
    high: String!
  }

  "Low, expected and high ROI as 4-place decimal ratios (0.2500 = 25 %)."
  type RatioRange {
    "At the expected cost."
    expected: String!
    "At the high end of the cost range."
    low: String!
    "At the low end of the cost range."
    high: String!
  }

  "Low, expected and high values of a quantity."
  type FloatRange {
    "The expected value."
    expected: Float!
    "The low end of the range."
    low: Float!
    "The high end of the range."
    high: Float!
  }

  "Expected metered cost of one stage by resource."
  type StageCostEstimate {
    "CPU time (the worker's and its child processes') at the CPU rate."
    cpu: MoneyRange!
    "Time of GPUs assigned to the stage at the GPU rate."
    gpu: MoneyRange!
    "Bytes the stage keeps, priced per GB-month for the retention period."
    storage: MoneyRange!
    "cpu + gpu + storage."
    total: MoneyRange!
  }

  "What one stage of a spec is expected to take and cost."
  type StageEstimate {
    "The stage id from the spec."
    stageId: String!
    "The stage's plugin."
    plugin: String!
    "The plugin version the spec resolves to (estimates only compare runs of the same version)."
    pluginVersion: String!
    "Where the numbers come from."
    basis: EstimateBasis!
    "How they were made, in words: which runs, which scale factors, or why there is no number."
    detail: String!
    "How many past runs the estimate uses (HISTORY); 0 otherwise."
    samples: Int!
    "The ids of those runs, newest first."
    sampleRuns: [String!]!
    "Expected duration in seconds (retries, replicas and slot waits included); null when UNKNOWN."
    durationSeconds: FloatRange
    "Bytes the stage is expected to keep; null when UNKNOWN."
    bytesKept: FloatRange
    "Expected metered cost by resource; null when UNKNOWN (never a made-up number)."
    cost: StageCostEstimate
  }

  "A cost the ledger stage declares (not metered)."
  type DeclaredCostLine {
    "data-acquisition, labelling, people or other."
    category: String!
    "What it is for."
    description: String!
    "The amount as an exact decimal string."
    amount: String!
  }

  """
  What a spec is expected to cost, take and return before it runs. Money as exact decimal strings
  in currency; ROI as 4-place decimal ratios.
  """
  type RunEstimate {
    "ISO 4217 currency of every amount (the price sheet's, after the ledger stage's override)."
    currency: String!
    "When the estimate was made."
    madeAt: DateTime!
    "True when every stage has an estimate; when false, the totals leave out unknownStages."
    complete: Boolean!
    "Stages with basis UNKNOWN."
    unknownStages: [String!]!
    "Expected duration of the run in seconds: the longest chain of stages (stages in parallel overlap)."
    durationSeconds: FloatRange!
    "Expected metered cost of the stages that have an estimate."
    meteredCost: MoneyRange!
    "Costs the ledger stage declares (people, data, labelling), summed."
    declaredCost: String!
    "The declared costs, one by one."
    declaredCosts: [DeclaredCostLine!]!
    "meteredCost + declaredCost."
    totalCost: MoneyRange!
    "Revenue the ledger stage's revenue model expects; null without a core:roi-ledger stage."
    expectedRevenue: String
    "ROI = (R − C) / C at the expected cost (expected), the high cost (low) and the low cost (high); null with roiExplanation when it cannot be given."
    roi: RatioRange
    "Why roi is null (no ledger stage, a stage without an estimate, or zero cost); null when roi is set."
    roiExplanation: String
    "Per stage, in spec order."
    stages: [StageEstimate!]!
  }

  "One stage's own limit within a run's budget."
  type StageBudget {
    "The stage id."
    stageId: String!
    "Its limit as an exact decimal."
    max: String!
    "What its spend so far is, as of its last attempt that ended."
    spent: String!
    "PAUSE or FAIL when the stage would exceed it."
    onExceed: BudgetAction!
  }

  "What a run does when its budget would be or is exceeded."
  enum BudgetAction {
    "Pause the run (status PAUSED, the stage in pausedStages) until raiseBudget, skipStage or abortRun."
    PAUSE
    "Fail the run at once."
    FAIL
  }

  "An operator's raise of a budget."
  type BudgetRaise {
    "When it was raised."
    at: DateTime!
    "The stage whose budget was raised; null for the run's."
    stageId: String
    "The limit before."
    from: String!
    "The limit after."
    to: String!
    "The token name that raised it; null when unknown."
    by: String
  }

  """
  A run's budget and what it has spent (runs whose spec sets one). Before a stage starts, its
  estimate must fit in what is left (after the running stages' reservations); while it runs, crossing the limit stops it at its next
  checkpoint. Either pauses the run (or fails it, with onExceed FAIL).
  """
  type RunBudget {
    "ISO 4217 currency of the amounts."
    currency: String!
    "The run's limit; null when only stages have limits."
    max: String
    "What the run does when it would exceed its limit."
    onExceed: BudgetAction!
    "The run's metered spend as of its last stage attempt that ended (the ledger's spend field is the live figure)."
    spent: String!
    "Estimates held out of the run's limit by the stages running now (key: stage id); a stage starts only if its estimate fits beside them."
    reserved: [RoiBreakdown!]!
    "Stages with limits of their own."
    stages: [StageBudget!]!
    "Raises so far, in order."
    raises: [BudgetRaise!]!
  }

  "A run's spend so far by the ledger's meters, priced now with the configured sheet; nothing is booked."
  type RunSpend {
    "ISO 4217 currency of the amounts."
    currency: String!
    "The total so far."
    total: String!
    "Per stage id."
    byStage: [RoiBreakdown!]!
  }

  "A recorded crossing of a deployed model version's realised ROI under its pipeline's threshold."
  type RoiAlert {
    "roi.below/<model>/<version>/<crossing>: also the id of the roi.below event it emitted."
    id: ID!
    "The model name."
    model: String!
    "The model version."
    version: Int!
    "The run that produced the version."
    runId: ID!
    "The run's pipeline."
    pipeline: String!
    "Which crossing of this version it is (1, 2, …): the ROI rose above the threshold again in between."
    crossing: Int!
    """
    Realised ROI over the window when it crossed: (R_w − C·w/h) / (C·w/h), where R_w is the revenue of
    the predictions served in the window, C the run's booked cost, w the window and h the revenue
    model's horizon. A 4-place decimal ratio.
    """
    realisedRoi: String!
    "The threshold the pipeline declared (watch.minRealisedRoi)."
    minRealisedRoi: String!
    "The window in seconds."
    windowSeconds: Float!
    "R_w, the revenue of the window's predictions."
    revenue: String!
    "C·w/h, the run's cost spread over the window."
    costShare: String!
    "ISO 4217 currency of the amounts."
    currency: String!
    "Runs the roi.below event started (saved pipelines with that trigger)."
    startedRuns: [ID!]!
    "Whether the roi.below event was emitted (if not, it is retried at the next check)."
    emitted: Boolean!
    "When it crossed."
    at: DateTime!
  }

  "A deployed model version's realised ROI as one check judged it."
  type RoiCheck {
    "The model name."
    model: String!
    "The model version."
    version: Int!
    "The run that produced it."
    runId: ID!
    "Realised ROI over the window (4-place decimal ratio)."
    realisedRoi: String!
    "The threshold."
    minRealisedRoi: String!
    "Predictions served in the window."
    predictions: Float!
    "Revenue of those predictions."
    revenue: String!
    "The run's cost spread over the window."
    costShare: String!
    "True when realisedRoi is under the threshold."
    below: Boolean!
    "Set when this check crossed under the threshold: the crossing's number; null otherwise."
    crossing: Int
  }

  extend type PipelineRun {
    "What the run was estimated at when it started; null for runs started before estimates existed or without a price sheet."
    estimate: RunEstimate
    "The run's budget and spend (from the run itself); null when its spec sets no budget."
    budget: RunBudget
    "The run's spend so far by the ledger's meters (every attempt, failed ones included), priced now; nothing is booked."
    spend: RunSpend
  }

  extend type StageRun {
    "Set while the run is paused on this stage for its budget: why, with the figures; null otherwise."
    budgetPause: String
  }

  extend type Query {
    """
    What a spec is expected to cost, take and return, per stage and in total, from past runs; starts
    nothing. Errors: SPEC_INVALID (extensions.issues), BAD_ARGUMENT (this host has no price sheet).
    """
    estimateRun(
      "The spec to estimate."
      spec: PipelineSpecInput!
    ): RunEstimate!
    "Recorded realised-ROI alerts, newest first."
    roiAlerts(
      "Only this model's alerts; all when omitted."
      model: String
      "At most this many, 1–100 (default 20)."
      first: Int = 20
    ): [RoiAlert!]!
  }

  extend type Mutation {
    """
    Raises a run's budget (or one stage's, with stageId) to max; a run paused on its budget looks again
    and carries on (a stage stopped at a checkpoint resumes from it). Only upward, on a RUNNING or
    PAUSED run. Errors: NOT_FOUND, BAD_ARGUMENT (max is not a decimal amount), DECISION_REJECTED (no
    budget, not above the current limit, or the run is closed).
    """
    raiseBudget(
      "The run's id."
      runId: ID!
      "The new limit as a decimal amount in the budget's currency, e.g. 12.50; above the current one."
      max: String!
      "Raise this stage's own budget instead of the run's."
      stageId: String
    ): PipelineRun!
    """
    Judges every watched deployment's realised ROI now (the API also does it periodically) and emits
    roi.below for each new crossing, once per crossing; returns what was judged.
    """
    checkRoiWatches: [RoiCheck!]!
  }
`;
