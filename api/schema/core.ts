// GraphQL SDL of the core module: runs, their stages and events, run listing, stage plugins and
// pipeline specs. Every type, field, argument and enum value is described (test/api/schema-lint.test.ts
// lints it); the descriptions are what API users read in GraphiQL.
export const coreTypeDefs = /* GraphQL */ `
  """
  A point in time as an ISO-8601 string in UTC with milliseconds, e.g. 2025-01-31T14:05:09.123Z.
  As input, an ISO-8601 date or date-time string (e.g. 2025-01-31 or 2025-01-31T14:05:09+01:00); a
  value that is not a date is refused with code BAD_DATE.
  """
  scalar DateTime

  """
  Any JSON value: object, array, string, number, boolean or null. Used for free-form data such as
  stage params, metrics and JSON Schemas.
  """
  scalar JSON

  """
  Where a pipeline run is in its life. RUNNING and PAUSED are open (the workflow is still running);
  the others are closed and final.
  """
  enum RunStatus {
    "Open: stages are running or waiting for the stages they need."
    RUNNING
    "Closed: every stage succeeded, was reused or was skipped."
    COMPLETED
    """
    Closed: a stage failed with onFailure action fail, an operator aborted the run (abortRun), a
    pause got no decision within onFailure.timeout, or the workflow itself failed.
    """
    FAILED
    "Closed: cancelled with cancelRun (or in Temporal); artifacts of completed stages stay."
    CANCELLED
    """
    Open: a stage used up its retries and the run waits for an operator decision on it
    (retryStage, skipStage or abortRun; see pausedStages).
    """
    PAUSED
    "Closed: terminated in Temporal (UI or CLI) without any clean-up by the run."
    TERMINATED
    "Closed: the Temporal workflow hit its execution timeout."
    TIMED_OUT
  }

  "Where one stage of a run is."
  enum StageStatus {
    "Not started yet: waiting for the stages it needs (or the run closed before it started)."
    PENDING
    "An attempt is running, or Temporal is waiting to retry a failed attempt."
    RUNNING
    "Finished: its outputs and metrics are set."
    SUCCEEDED
    """
    Used up its retries or failed with a non-retryable error (see error and errorType); the run is then
    PAUSED on it or FAILED, depending on the spec's onFailure.
    """
    FAILED
    "Skipped by an operator (skipStage) after it failed; it has no outputs."
    SKIPPED
    "Stopped because the run was cancelled or closed while the stage was running."
    CANCELLED
    "Not run: its outputs were taken from an earlier run (resumeRun); see reusedFrom."
    REUSED
  }

  """
  A reference to an artifact (a folder of files) in the artifact store. Only the reference travels
  through Temporal and this API; the data stays in the store.
  """
  type Artifact {
    "Artifact kind, as the producing plugin declares it in produces, e.g. dataset, model or deployment."
    kind: String!
    "Location in the artifact store: artifact:<path relative to the store root>. Resolve it only on hosts sharing the store."
    uri: String!
    "SHA-256 (64 lowercase hex digits) over the artifact's file names and contents; checked before reuse."
    sha256: String!
    "Total size of the artifact's files, in bytes (a Float so that sizes above 2^31 fit)."
    bytes: Float!
    "Small facts the plugin recorded about the artifact (shapes, counts, class balance, …); null when none."
    meta: JSON
  }

  "One stage of a run: its status, attempts, outputs and metrics."
  type StageRun {
    "The stage id from the spec (stages[].id), unique within the run."
    id: ID!
    "Name of the stage plugin that runs it, e.g. core:pretrain (see stagePlugins)."
    plugin: String!
    "Where the stage is now."
    status: StageStatus!
    """
    Attempts used so far, Temporal retries and operator retries included. Updated when an attempt
    sequence ends (the stage succeeds or fails); while it runs see currentAttempt.
    """
    attempts: Int!
    "When the stage's latest try started (an operator retry starts a new one); null before it first starts."
    startedAt: DateTime
    "When the stage's latest try succeeded, failed or was cancelled; null while pending or running."
    closedAt: DateTime
    "The artifacts the stage produced (or reused), one per produced kind; empty until it succeeds."
    outputs: [Artifact!]!
    """
    What the stage measured, as a JSON object of numbers, strings and booleans (e.g. testAccuracy,
    epochs, tfBackend, cacheHit); {} until the stage succeeds.
    """
    metrics: JSON!
    "Message of the latest failure (of a running attempt that will be retried, or of the failed stage); null when none."
    error: String
    "Error type of the latest failure, e.g. PLUGIN_PARAMS_INVALID or DATA_CORRUPT; null when none or unknown."
    errorType: String
    "When status is REUSED: the id of the earlier run whose outputs were reused (resumeRun); null otherwise."
    reusedFrom: String
    """
    Details of the last heartbeat of the running attempt, as the plugin sent them (training stages
    send e.g. epoch and metrics); null when the stage is not running or its attempt has not sent one yet.
    """
    progress: JSON
    "Temporal attempt number (from 1) of the attempt running now; null when no attempt is running."
    currentAttempt: Int
    """
    Why the stage is waiting instead of working, with live figures: for its slots on a task queue
    (SLOTS), or replicas waiting at a round barrier for the others (BARRIER); null when it is not waiting.
    """
    wait: StageWait
  }

  "What a waiting stage waits for."
  enum StageWaitReason {
    "For all its slots at once from its task queue's slot keeper (gang scheduling: gpu stages and data-parallel replicas)."
    SLOTS
    "Some replicas finished a round and wait at its barrier for the replicas that have not arrived."
    BARRIER
  }

  "A run holding slots of a task queue."
  type StageWaitHolder {
    "The holding run's id."
    runId: String!
    "Pipeline and stage of the holder (<pipeline>/<stage>); null when the holder gave none."
    label: String
    "How many slots it holds."
    slots: Int!
    "Since when it holds them."
    since: DateTime!
  }

  """
  Why a running stage is not making progress. SLOTS figures (capacity, free, position, heldBy) are
  read from the queue's slot keeper when asked, so they are current; BARRIER figures come from the
  replicas' latest heartbeats.
  """
  type StageWait {
    "What it waits for."
    reason: StageWaitReason!
    "When the wait began: the slot request, or the arrival of the first replica waiting at the barrier."
    since: DateTime!
    "One line for people, e.g. waits for 2 slot(s) on capstan-gpu: 0 of 2 free, position 1 of 1 in line; held by mnist-default/fit (2)."
    message: String!
    "SLOTS: the task queue the slots come from; null for BARRIER."
    queue: String
    "SLOTS: how many slots the stage needs at once (one per replica); null for BARRIER."
    slotsNeeded: Int
    "SLOTS: the queue's live capacity (slots of its live workers); null for BARRIER or when the keeper did not answer."
    capacity: Int
    "SLOTS: slots free now; null for BARRIER or when the keeper did not answer."
    free: Int
    "SLOTS: 1-based place among the requests waiting on the queue; null when not in line (e.g. just granted) or unknown."
    position: Int
    "SLOTS: how many requests wait on the queue, this one included; null when unknown."
    queueLength: Int
    "SLOTS: who holds the queue's slots now; empty for BARRIER."
    heldBy: [StageWaitHolder!]!
    "BARRIER: the averaging round the replicas meet at; null for SLOTS."
    round: Int
    "BARRIER: the replicas (indexes from 0) waiting at the barrier; empty for SLOTS."
    waitingReplicas: [Int!]!
    "BARRIER: the replicas that have not arrived, which the others wait for; empty for SLOTS."
    waitingForReplicas: [Int!]!
    "BARRIER: of waitingForReplicas, those whose activity no worker has picked up yet (scheduled, not started); empty for SLOTS."
    notStartedReplicas: [Int!]!
  }

  "Something that happened in a run, recorded by the run itself, in order."
  type RunEvent {
    "Position in the run's event list, from 1, increasing by one."
    seq: Int!
    "When it happened."
    at: DateTime!
    """
    What happened: RUN_STARTED, STAGE_STARTED, STAGE_WAITING (it asked for its slots and waits for
    them; message says how many on which queue), STAGE_WAIT_ENDED (granted, refused or given up, and
    after how long), STAGE_REQUEUED (a gang gave its slots back and asks again; the message says why),
    STAGE_SUCCEEDED, STAGE_FAILED, STAGE_REUSED, STAGE_SKIPPED, RUN_PAUSED, RUN_RESUMED, RUN_COMPLETED,
    RUN_FAILED, RUN_CANCELLED or BUDGET_RAISED.
    """
    type: String!
    "The stage it concerns; null for run-level events such as RUN_STARTED."
    stageId: String
    "Human-readable detail (e.g. the failure message or the operator retry number); null when none."
    message: String
  }

  "One execution of a pipeline spec: a Temporal workflow running the stages in dependency order."
  type PipelineRun {
    "The run's id, which is its Temporal workflow id: pipeline/<pipeline name>/<5 random characters>, e.g. pipeline/mnist-default/7f3k2."
    id: ID!
    "The Temporal run id of the workflow execution (a UUID); null only when Temporal did not report one."
    runId: String
    "The pipeline name from the spec (its name field)."
    pipeline: String!
    "Where the run is now."
    status: RunStatus!
    "When the run started; null only when Temporal did not report it."
    startedAt: DateTime
    "When the run closed; null while it is RUNNING or PAUSED."
    closedAt: DateTime
    "The run's stages, in spec order."
    stages: [StageRun!]!
    """
    TensorFlow.js backend the ML stages ran on: node-gpu, node, wasm or cpu; null until an ML stage
    has succeeded (or when the pipeline has none).
    """
    tfBackend: String
    "The id of the run this one resumes (it was started by resumeRun); null otherwise."
    resumedFrom: String
    "Ids of the stages waiting for an operator decision; empty unless status is PAUSED."
    pausedStages: [String!]!
    "What happened in the run so far, oldest first. For a live stream use the runEvents subscription."
    events: [RunEvent!]!
    "Link to the run's history in the Temporal Web UI; null when the API has no UI address configured (CAPSTAN_TEMPORAL_UI_URL)."
    temporalUrl: String
    """
    The OpenTelemetry trace id of the run (32 hex digits): the trace of the request that started
    it (startPipeline, emitEvent, resumeRun), with the workflow and every stage attempt in it; for a
    run a schedule fired, the trace its workflow began. Null when the run was started with tracing off.
    """
    traceId: String
    "Link to the run's trace in a trace UI; null without a trace id or without CAPSTAN_TRACE_UI_URL."
    traceUrl: String
  }

  """
  Information about one page of a connection (Relay cursor connections spec). Every edge cursor is
  a position: passing it as after continues right after that edge.
  """
  type PageInfo {
    "True when more items follow this page: request them with after set to endCursor."
    hasNextPage: Boolean!
    """
    True when items precede this page, i.e. the page was requested with after. Only forward paging
    (first/after) is offered; go back by requesting again with an earlier cursor.
    """
    hasPreviousPage: Boolean!
    "Cursor of the first edge of this page; null when the page is empty."
    startCursor: String
    "Cursor of the last edge of this page (pass it as after for the next page); null when the page is empty."
    endCursor: String
  }

  "One run in a page of runs, with its position."
  type PipelineRunEdge {
    """
    The run. Runs in a list carry the fields Temporal's visibility store has (id, runId, pipeline,
    status, startedAt, closedAt); asking for the others (stages, events, …) loads each run in full.
    """
    node: PipelineRun!
    "Opaque cursor of this edge: pass it as runs(after:) to get the runs that follow this one."
    cursor: String!
  }

  "A page of runs, newest first (Relay cursor connection)."
  type PipelineRunConnection {
    "The runs of this page, newest first, each with its cursor."
    edges: [PipelineRunEdge!]!
    "Whether more runs follow, and the cursors of the first and last edges."
    pageInfo: PageInfo!
  }

  "A stage plugin installed on this API host: what a spec's stages[].plugin may name."
  type StagePlugin {
    "Name as specs use it: <scope>:<kebab-name>, e.g. core:pretrain."
    name: String!
    "The plugin's semver version; a new version invalidates cached and reused outputs."
    version: String!
    "What the stage does, in the plugin author's words."
    description: String!
    "JSON Schema of the params the stage accepts (spec stages[].params), converted from the plugin's zod schema."
    paramsSchema: JSON!
    "Artifact kinds the stage reads, e.g. [dataset]; each must be produced by a stage it depends on."
    consumes: [String!]!
    "Artifact kinds the stage writes, e.g. [model]."
    produces: [String!]!
    "Resource class, cpu or gpu: picks the task queue, and so the kind of worker host, the stage runs on."
    resource: String!
    "True when the stage runs as several replica activities followed by a reduce (e.g. core:multi-device-fit)."
    dataParallel: Boolean!
    "Where the plugin was loaded from: built-in, or the path of the module file it was loaded from (via CAPSTAN_PLUGINS)."
    source: String!
  }

  "One stage of a pipeline spec."
  input StageSpecInput {
    "Stage id, unique in the spec: lower-case letters, digits, - or _, starting with a letter, at most 63 characters."
    id: String!
    "Name of the stage plugin to run, e.g. core:pretrain (see stagePlugins)."
    plugin: String!
    "Exact plugin version to use; the newest installed version when omitted."
    version: String
    "The plugin's params as a JSON object, checked against its paramsSchema; {} when omitted."
    params: JSON
    "Ids of earlier stages this one waits for; when omitted, the previous stage; [] starts it at once."
    needs: [String!]
    """
    Which stage provides each consumed artifact kind, as a JSON object kind → stage id, e.g.
    {model: train}; needed only when several stages it depends on produce that kind.
    """
    inputs: JSON
    """
    Retry policy overriding the plugin's, as a JSON object with any of maximumAttempts (1–100),
    initialInterval and maximumInterval (durations such as 2s, 5m, 1h or milliseconds),
    backoffCoefficient (1–10) and nonRetryableErrorTypes (a list of error types).
    """
    retry: JSON
    "Timeouts overriding the plugin's, as a JSON object with startToClose (one attempt) and heartbeat, each a duration such as 30s, 2h or milliseconds."
    timeouts: JSON
    "Reuse the outputs of an earlier successful run with the same plugin version, params and inputs; false when omitted."
    cache: Boolean
    "This stage's own spending limit, as a JSON object with max (a decimal amount such as 0.50) and onExceed (pause or fail), in the run budget's currency."
    budget: JSON
  }

  "A pipeline spec: the stages to run and what to do when one fails. The same shape as the JSON/YAML spec."
  input PipelineSpecInput {
    "Pipeline name: letters, digits, ., - or _, at most 63 characters. Runs are listed and costed by it."
    name: String!
    "What the pipeline is for (free text)."
    description: String
    "The stages, at least one. Each waits for the previous one unless its needs say otherwise."
    stages: [StageSpecInput!]!
    """
    What a stage that used up its retries does, as a JSON object: {action: pause, timeout: 24h}
    (the default action; waits for retryStage/skipStage/abortRun, up to timeout, default 7 days)
    or {action: fail} (the run fails at once).
    """
    onFailure: JSON
    """
    The run's spending limit, as a JSON object {max: "2.50", currency: USD, onExceed: pause|fail}: before
    a stage starts, its estimate must fit in what is left; a running stage that crosses it stops at its
    next checkpoint. Currency defaults to the price sheet's (and must equal it).
    """
    budget: JSON
    """
    Watch the deployed model's realised ROI, as a JSON object {minRealisedRoi: "0.25", window: 1h}; needs
    a core:roi-ledger stage with a per-prediction revenue model. Under the threshold, a roi.below event
    is emitted (once per crossing) and recorded (roiAlerts).
    """
    watch: JSON
  }

  "One problem found in a pipeline spec."
  type SpecIssue {
    "Where in the spec, e.g. stages[2].params.sparsity; empty for the spec as a whole."
    path: String!
    "What is wrong, in words."
    message: String!
    """
    Kind of problem: SPEC_INVALID (shape of the spec), UNKNOWN_PLUGIN, PLUGIN_PARAMS_INVALID,
    DUPLICATE_STAGE_ID, UNKNOWN_DEPENDENCY (needs names no earlier stage) or MISSING_INPUT (no stage
    it depends on produces a consumed kind).
    """
    code: String!
  }

  "The result of checking a pipeline spec."
  type SpecValidation {
    "True when the spec would start: issues is empty."
    valid: Boolean!
    "Every problem found, each with its path; empty when valid."
    issues: [SpecIssue!]!
  }

  "Reading runs, plugins, saved pipelines, schedules, the ledger and the model registry."
  type Query {
    "One run, with its stages and events; null when no run has this id."
    run(
      "The run's id (its Temporal workflow id), e.g. pipeline/mnist-default/7f3k2."
      id: ID!
    ): PipelineRun
    """
    Runs from Temporal's visibility store, newest first, one page at a time (Relay cursor
    connection). Errors: BAD_ARGUMENT when first is outside 1–100 or after is not a cursor from runs.
    """
    runs(
      "Only runs of this pipeline name; all pipelines when omitted."
      pipeline: String
      "Only runs with this status; all when omitted."
      status: RunStatus
      "Page size: how many runs to return, 1–100 (default 20)."
      first: Int = 20
      "Return the runs that follow this cursor: an edge cursor or pageInfo.endCursor of an earlier page. From the newest run when omitted."
      after: String
    ): PipelineRunConnection!
    "The stage plugins installed on this API host, which specs are validated against."
    stagePlugins: [StagePlugin!]!
    "Checks a spec against the plugin registry without starting anything; lists every problem rather than failing."
    validatePipeline(
      "The spec to check."
      spec: PipelineSpecInput!
    ): SpecValidation!
  }

  "Starting, deciding on and cancelling runs; saved pipelines, schedules and events; model promotion."
  type Mutation {
    """
    Validates the spec and starts a run of it; returns the new run (status RUNNING, stages PENDING).
    Errors: SPEC_INVALID (extensions.issues lists every problem with its path; nothing starts),
    QUOTA_EXCEEDED (HTTP 429 with Retry-After: the token already has CAPSTAN_MAX_CONCURRENT_RUNS open runs; nothing starts).
    """
    startPipeline(
      "The pipeline to run."
      spec: PipelineSpecInput!
    ): PipelineRun!
    """
    Same as startPipeline, with the spec as JSON or YAML text (the format of spec files).
    Errors: SPEC_INVALID, also when the text is neither JSON nor YAML; QUOTA_EXCEEDED (HTTP 429) as startPipeline.
    """
    startPipelineFromText(
      "The spec as JSON (starting with an opening brace) or YAML text."
      text: String!
    ): PipelineRun!
  }
`;
