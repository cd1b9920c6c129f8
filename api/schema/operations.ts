// GraphQL SDL of the operations module: decisions on paused runs, cancel, resume, saved pipelines,
// schedules, events and the live run stream. Every type, field, argument and enum value is
// described (test/api/schema-lint.test.ts lints it).
export const operationsTypeDefs = /* GraphQL */ `
  "What a resumed run does with one stage."
  enum ResumeAction {
    "The stage does not run: its outputs from the earlier run are reused (status REUSED in the new run)."
    REUSE
    "The stage runs again in the new run."
    RERUN
  }

  "The plan for one stage of a resume."
  type ResumePlanStage {
    "The stage id."
    id: String!
    "Whether its outputs are reused or it runs again."
    action: ResumeAction!
    """
    Why, e.g. completed in pipeline/x/abc12; plugin, params and artifacts unchanged — or: did not
    complete in the earlier run, params changed, plugin changed from 1.0.0 to 1.1.0, depends on
    train, which reruns, or the artifact check that failed.
    """
    reason: String!
  }

  """
  How a run would be resumed: a stage is reused when it completed before the start point and its
  plugin version, params and artifacts (present, hash intact) are unchanged; every other stage, and
  everything depending on a rerun stage, runs again.
  """
  type ResumePlan {
    "The id of the run being resumed."
    from: String!
    "The first stage that runs again; null when every stage would be reused."
    startAt: String
    "Every stage of the spec, in spec order, with its action and reason."
    stages: [ResumePlanStage!]!
  }

  "The result of resumeRun."
  type ResumeResult {
    "What is reused and what reruns, with a reason per stage."
    plan: ResumePlan!
    "The new run (its resumedFrom is the old run's id); null for a dry run."
    run: PipelineRun
  }

  "A pipeline spec stored under its name, to be started by schedules and events."
  type SavedPipeline {
    "The spec's name, which is the key: saving a spec with the same name replaces it."
    name: String!
    "The spec as saved (JSON); string params may hold {{event.x}} placeholders filled from an event's payload."
    spec: JSON!
    "Event types (e.g. dataset.updated) that start it through emitEvent; empty when only schedules or nobody start it."
    triggers: [String!]!
    "When it was last saved."
    updatedAt: DateTime!
  }

  "A Temporal Schedule that starts a saved pipeline."
  type PipelineSchedule {
    "Schedule id: capstan/<saved pipeline name>/<6 hex digits>. Pass it to pauseSchedule and deleteSchedule."
    id: ID!
    "Name of the saved pipeline it starts."
    pipeline: String!
    "Cron expressions it fires on, as given (evaluated in UTC); empty when interval-only."
    cron: [String!]!
    "Intervals it fires on, as given, e.g. 30s or 1h; empty when cron-only."
    every: [String!]!
    "True while paused: it starts nothing until unpaused."
    paused: Boolean!
    "The next times it will start a run, as Temporal computes them."
    nextActionTimes: [DateTime!]!
    "Ids of the runs it started most recently, as Temporal reports them (usable with run(id:))."
    recentRuns: [String!]!
  }

  "One item of a run's live stream (subscription runEvents)."
  type RunStreamEvent {
    "Position in this stream, from 1, increasing by one (not the run's RunEvent.seq)."
    seq: Int!
    "When it happened (for STAGE_RETRIED and STAGE_PROGRESS: when the stream noticed it)."
    at: DateTime!
    """
    What happened: RUN_STARTED, STAGE_STARTED, STAGE_WAITING, STAGE_WAIT_ENDED, STAGE_PROGRESS,
    STAGE_RETRIED, STAGE_SUCCEEDED, STAGE_FAILED, STAGE_SKIPPED, STAGE_REUSED, RUN_PAUSED,
    RUN_RESUMED, RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED, and last RUN_CLOSED (message = the final
    status), after which the stream ends. STAGE_WAITING / STAGE_WAIT_ENDED come from the run for
    slot waits, and from the stream for replicas waiting at a round barrier (see StageRun.wait).
    """
    type: String!
    "The stage it concerns; null for run-level events."
    stageId: String
    "Human-readable detail (for STAGE_RETRIED the previous attempt's error); null when none."
    message: String
    "Temporal attempt number (from 1) of the stage's running attempt, for STAGE_RETRIED and STAGE_PROGRESS; null otherwise."
    attempt: Int
    "For STAGE_PROGRESS: the attempt's latest heartbeat details (e.g. epoch and metrics); null otherwise."
    progress: JSON
    "For STAGE_WAITING: the wait with its figures when the stream saw it (queue, slots, capacity, position, or the barrier); null otherwise."
    wait: StageWait
    "The run's status when the event was streamed."
    runStatus: RunStatus!
  }

  extend type Query {
    "All saved pipelines, by name."
    savedPipelines: [SavedPipeline!]!
    "One saved pipeline; null when none has this name."
    savedPipeline(
      "The saved pipeline's name (its spec's name)."
      name: String!
    ): SavedPipeline
    "Capstan's schedules (ids starting with capstan/; others in the Temporal namespace are not listed)."
    schedules(
      "Only the schedules of this saved pipeline; all when omitted."
      pipeline: String
    ): [PipelineSchedule!]!
  }

  extend type Mutation {
    """
    Retries a stage of a PAUSED run, optionally with corrected params; returns the run. The rerun
    acts with the caller's token (name, role, id), not the starter's, and the run's events record
    who decided; after new params or a plugin version, later stages act as the caller too (unless
    that would raise a run that is not an admin's to an admin's rights).
    Errors: NOT_FOUND (no such run), DECISION_REJECTED (the run is not PAUSED, has no such stage, or the
    workflow refuses), PLUGIN_PARAMS_INVALID (params fail the plugin's schema; extensions.issues),
    UNKNOWN_PLUGIN (the stage's plugin is not installed on this API host, so params cannot be checked),
    BAD_ARGUMENT (params over 64 KiB of JSON, the per-stage limit of specs).
    """
    retryStage(
      "The paused run's id."
      runId: ID!
      "The stage to retry: one of the run's pausedStages."
      stageId: String!
      "Params replacing the spec's for this stage (a JSON object, checked against the plugin's paramsSchema); the spec's when omitted."
      params: JSON
      "Run the stage with this installed version of its plugin instead (e.g. when the pinned version is no longer installed: UNKNOWN_PLUGIN); params are checked against that version's schema."
      pluginVersion: String
    ): PipelineRun!
    """
    Skips a failed stage of a PAUSED run (it becomes SKIPPED, with no outputs) and carries on; returns
    the run; the run's events record who skipped it. Errors: NOT_FOUND, DECISION_REJECTED (the run is not PAUSED, or a later stage needs the
    stage's outputs).
    """
    skipStage(
      "The paused run's id."
      runId: ID!
      "The stage to skip: one of the run's pausedStages."
      stageId: String!
    ): PipelineRun!
    """
    Ends a PAUSED run as FAILED with the given reason; returns the run.
    Errors: NOT_FOUND, BAD_ARGUMENT (blank reason), DECISION_REJECTED (the run is not PAUSED).
    """
    abortRun(
      "The paused run's id."
      runId: ID!
      "Why it is aborted (required, not blank); recorded in the run's failure."
      reason: String!
    ): PipelineRun!
    """
    Cancels a RUNNING or PAUSED run: the running stage stops at its next heartbeat (training child
    processes are killed), the run closes CANCELLED, artifacts of completed stages stay. Returns the
    run as it is right after the request (it may still show RUNNING for a moment).
    Errors: NOT_FOUND, RUN_CLOSED (the run is already closed).
    """
    cancelRun(
      "The run's id."
      runId: ID!
      "Why it is cancelled (free text, optional)."
      reason: String
    ): PipelineRun!
    """
    Starts a new run of a closed run's spec, reusing the outputs of the stages that completed before
    fromStage and are unchanged (see ResumePlan); reads the old run from Temporal's history, so the
    original worker need not exist. Errors: NOT_FOUND, RUN_NOT_CLOSED (the run is RUNNING or PAUSED;
    a paused run takes retryStage or skipStage; not raised for a dry run), RESUME_IMPOSSIBLE (the old
    run's input is unreadable, or fromStage is not a stage of it), SPEC_INVALID (the old spec no
    longer validates, e.g. its plugin was removed).
    """
    resumeRun(
      "The id of the run to resume."
      runId: ID!
      "Rerun from this stage on (it and every later stage run again); from the first stage that cannot be reused when omitted."
      fromStage: String
      "When true, only plan: return the plan with a reason per stage and start nothing (run is null)."
      dryRun: Boolean = false
    ): ResumeResult!

    """
    Saves a spec under its name (replacing a saved pipeline of the same name), with the event types
    that start it. String params may hold {{event.x}} placeholders; params are then checked when an
    event fills them in. Its triggers fire only while the token that saved it is active.
    Errors: SPEC_INVALID, BAD_ARGUMENT (a trigger is not an event type).
    """
    savePipeline(
      "The spec to save; its name is the saved pipeline's name."
      spec: PipelineSpecInput!
      "Event types that start it through emitEvent: letters, digits, ., - and _, e.g. dataset.updated. None when omitted."
      triggers: [String!]
    ): SavedPipeline!
    "Deletes a saved pipeline; true when it existed, false when there was none. Its schedules are not deleted."
    deleteSavedPipeline(
      "The saved pipeline's name."
      name: String!
    ): Boolean!
    """
    Starts a saved pipeline on a schedule (a Temporal Schedule): on a cron expression, an interval, or
    both. It fires only while the creating token is active (a firing after it is revoked or expired
    fails with SCHEDULE_CREATOR_INACTIVE before any stage). Errors: NOT_FOUND (no saved pipeline of
    that name), BAD_ARGUMENT (neither cron nor every, or firings closer than
    CAPSTAN_MIN_SCHEDULE_INTERVAL, 60s by default, by interval or by cron), SPEC_INVALID (the saved
    spec does not validate now), SCHEDULE_INVALID (Temporal refused the schedule, e.g. a malformed
    cron expression), QUOTA_EXCEEDED (HTTP 429: the token already has CAPSTAN_MAX_SCHEDULES schedules).
    """
    schedulePipeline(
      "The saved pipeline's name."
      name: String!
      "A cron expression as Temporal Schedules accept it, e.g. 0 3 * * * (every day at 03:00 UTC)."
      cron: String
      "An interval: a number and a unit ms, s, m, h or d, e.g. 5m, 1.5h or 2d; at least CAPSTAN_MIN_SCHEDULE_INTERVAL (60s by default)."
      every: String
      "Admin only: the public id (ApiToken.id) of an active token, e.g. a service principal's, the schedule acts as instead of the caller: its runs are started by that token, count toward its quotas, and fire while it is active. Errors: FORBIDDEN (not an admin), BAD_ARGUMENT (no active token with that id)."
      runAs: ID
    ): PipelineSchedule!
    "Pauses (or with paused: false, unpauses) a schedule; returns it. Errors: NOT_FOUND."
    pauseSchedule(
      "The schedule's id, capstan/<name>/<hex>."
      id: ID!
      "True to pause, false to unpause."
      paused: Boolean = true
    ): PipelineSchedule!
    "Deletes a schedule; true when it existed, false when there was none. Runs it started are not touched."
    deleteSchedule(
      "The schedule's id, capstan/<name>/<hex>."
      id: ID!
    ): Boolean!
    """
    Starts every saved pipeline whose triggers include this event type, with each {{event.x}}
    placeholder in its params replaced by the payload's x ({{event.type}} is the type); returns the
    started runs, empty when no saved pipeline has the trigger. Errors: EVENT_PAYLOAD_MISSING (a
    placeholder names a key the payload lacks), SPEC_INVALID (the filled-in spec does not validate),
    BAD_ARGUMENT (an eventId that is empty or longer than 200 characters, or a payload over 64 KiB of
    JSON), QUOTA_EXCEEDED (HTTP 429, as startPipeline). Saved pipelines whose saver's token is revoked
    or expired are skipped. Runs started before an
    error keep running. With an eventId the call is idempotent: the run ids derive from it, so
    sending the same event again (a retry) starts nothing new and returns the runs it started.
    """
    emitEvent(
      "The event type, e.g. dataset.updated."
      type: String!
      "The event's data as a JSON object; its keys fill the placeholders. {} when omitted."
      payload: JSON
      "The sender's id for this event (e.g. a message id). The same id never starts a pipeline twice. Without it every call starts new runs."
      eventId: String
    ): [PipelineRun!]!
  }

  "Live updates."
  type Subscription {
    """
    Streams a run as it happens (over SSE): first the events it already has, then stage lifecycle,
    retries and per-epoch progress from heartbeats, ending with RUN_CLOSED when the run closes.
    Errors: NOT_FOUND.
    """
    runEvents(
      "The run's id."
      runId: ID!
    ): RunStreamEvent!
  }
`;
