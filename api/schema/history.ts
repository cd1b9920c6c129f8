// GraphQL SDL of the history module: what a run leaves behind for people to look at — every stage
// attempt with its start and end, per-epoch training metrics, the params each stage ran with,
// money per run over time, and the facts of a model version (latency, size, dtype, sparsity,
// gates). Every type, field, argument and enum value is described (test/api/schema-lint.test.ts lints it).
export const historyTypeDefs = /* GraphQL */ `
  "How one stage attempt ended, as the worker recorded it."
  enum AttemptOutcome {
    "Started and not ended yet (or its worker was lost before it could say; see the run's status)."
    RUNNING
    "Returned the stage's outputs."
    SUCCEEDED
    "Threw: Temporal retries it, or the stage fails when retries are used up or the error is not retryable."
    FAILED
    "Stopped because the run was cancelled."
    CANCELLED
  }

  "Which activity of a stage an attempt ran."
  enum AttemptRole {
    "The stage itself, or one replica of a data-parallel stage."
    RUN
    "The reduce step of a data-parallel stage, after its replicas."
    REDUCE
  }

  "One attempt of one activity of a stage, as the worker recorded it: the bars of a run's timeline."
  type StageAttempt {
    "The Temporal activity id: stage:<id>, with #<n> for the n-th operator retry and :replica-<i> or :reduce for data-parallel stages."
    activityId: String!
    "Operator retry number: 0 for the first try, n after the n-th retryStage."
    round: Int!
    "Temporal attempt number of the activity, from 1 (each Temporal retry adds one)."
    attempt: Int!
    "Replica index (from 0) of a data-parallel stage's replica; null for a stage's only activity and for its reduce."
    replica: Int
    "Whether it ran the stage (or a replica) or the reduce."
    role: AttemptRole!
    "When the attempt started on a worker."
    startedAt: DateTime!
    "When it ended; null while it runs (or when its worker was lost)."
    closedAt: DateTime
    "How it ended."
    outcome: AttemptOutcome!
    "The failure message when it failed or was cancelled; null otherwise."
    error: String
  }

  "What a training stage reported for one epoch of one attempt. Stored by the worker, so it outlives the run."
  type EpochMetrics {
    "Operator retry number of the attempt (0 for the first try)."
    round: Int!
    "Temporal attempt number of the attempt, from 1."
    attempt: Int!
    "Replica index of a data-parallel stage; null otherwise."
    replica: Int
    "The epoch, from 1."
    epoch: Int!
    "Mean training loss of the epoch (or the loss a fine-tune reported); null when not reported."
    trainLoss: Float
    "Training accuracy as a fraction 0–1; null when not reported."
    trainAccuracy: Float
    "Loss on the validation split; null when not reported."
    valLoss: Float
    "Accuracy on the validation split as a fraction 0–1; null when not reported."
    valAccuracy: Float
    "Every number reported for the epoch, as a JSON object (e.g. trainLoss, valAccuracy, samplesPerSec)."
    values: JSON!
    "When it was last written."
    recordedAt: DateTime!
  }

  extend type StageRun {
    "The params the stage runs with: an operator retry's corrected params when given, the spec's (with defaults filled in) otherwise; null when the run's spec cannot be read."
    params: JSON
    "Ids of the stages this one waits for."
    needs: [String!]!
    "Number of data-parallel replicas (1 for an ordinary stage)."
    replicas: Int!
    "Every recorded attempt of every activity of the stage (operator retries, Temporal retries, replicas, reduce), in start order; empty before it starts."
    attemptHistory: [StageAttempt!]!
    "Per-epoch metrics of every attempt of the stage, by round, attempt, replica and epoch; empty for stages that report none. Grows while the stage trains."
    epochs: [EpochMetrics!]!
  }

  "One run's money in a pipeline's window: one point of the pipeline's cost and revenue over time."
  type RunMoney {
    "The run's id."
    runId: ID!
    "When the run's first ledger entry in the window occurred (its place on the time axis)."
    at: DateTime!
    "ISO 4217 currency code of the amounts; null when the run has no entries."
    currency: String
    "Total cost, as an exact decimal string."
    cost: String!
    "Expected revenue (the run's revenue model), as an exact decimal string."
    revenue: String!
    "Realised revenue (served predictions), as an exact decimal string."
    realisedRevenue: String!
    "(revenue − cost) / cost as a 4-place decimal ratio; null when cost is zero."
    roi: String
    "(realisedRevenue − cost) / cost as a 4-place decimal ratio; null when cost is zero."
    realisedRoi: String
    "Cost per stage id, ordered by stage id."
    byStage: [RoiBreakdown!]!
    "Cost per resource or category (cpu, gpu, storage, people, …), ordered by name."
    byResource: [RoiBreakdown!]!
  }

  "One promotion gate a deploy stage checked."
  type GateResult {
    "The gate: minTestAccuracy, maxP99LatencyMs, maxSizeBytes or noWorseThan."
    gate: String!
    "The limit it was checked against (for noWorseThan: the production accuracy minus the tolerance, 0 when there was no production)."
    threshold: Float!
    "What the version measured."
    measured: Float!
    "Whether it passed."
    passed: Boolean!
    "What the comparison came to, in words (noWorseThan); null otherwise."
    note: String
  }

  extend type ModelVersion {
    "Median latency of one single-sample prediction, in milliseconds (metrics.p50LatencyMs); null when not measured."
    p50LatencyMs: Float
    "Size of the exported weights in bytes as the deploy stage measured it (metrics.sizeBytes); null when not measured."
    sizeBytes: Float
    "Weight format of the exported model, e.g. float32, uint8, uint16 or float16 (metrics.weightFormat); null when not recorded."
    dtype: String
    "Fraction 0–1 of weights that are zero after pruning, from the source run's prune stage; null when the run pruned nothing or is gone."
    sparsity: Float
    "The promotion gates the deploy stage checked, from its deployment record; null when it wrote none."
    gates: [GateResult!]
  }

  extend type Query {
    "Names of the pipelines with ledger entries, in name order."
    ledgerPipelines: [String!]!
    """
    A pipeline's cost, revenue and ROI per run, oldest first: the points of its money over time.
    Errors: BAD_INPUT (from is not before to, or last is outside 1–500), BAD_DATE.
    """
    roiByRun(
      "The pipeline name."
      pipeline: String!
      "Only entries that occurred at or after this time; from the first entry when omitted."
      from: DateTime
      "Only entries that occurred before this time; up to now when omitted."
      to: DateTime
      "At most this many runs (the newest), 1–500."
      last: Int = 100
    ): [RunMoney!]!
  }
`;
