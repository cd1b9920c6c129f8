// Every patch of the pipeline workflow, in the order they were added. A patch id is checked with
// `patched(id)` where the workflow's commands differ from older runs; runs started before the patch
// replay the old branch (docs/adr/0007-workflow-versioning.md). An id is never renamed or removed
// while a run that recorded it may still replay.

/** Runs started from here on cap the CapstanStage search attribute (older histories replay without it). */
export const PATCH_STAGE_ATTRIBUTE_LIMIT = 'capstan-stage-attribute-limit';
/**
 * Runs started from here on reserve their slots as a gang from the queue's slot keeper before a
 * data-parallel (or gpu) stage, cancel a failed replica's siblings, and release the slots after
 * (docs/adr/0008-gang-scheduling.md). Older histories replay the plain fan-out.
 */
export const PATCH_GANG_SLOTS = 'capstan-gang-slots';
/**
 * Runs started from here on give a gang's slots back and ask again when the keeper revokes them or
 * a replica cannot start (scheduleToStartTimeout on replicas; tries named `:try-<k>`), and pause
 * with GANG_STALLED after a bounded number of tries (docs/adr/0008-gang-scheduling.md).
 */
export const PATCH_GANG_REQUEUE = 'capstan-gang-requeue';
/**
 * Runs started from here on set the CapstanStage search attribute when a stage starts (and clear
 * it when the run closes), not also when a stage ends: one upsert per stage instead of two, which
 * shortens the stage gap. Between a stage's end and the next start it may still name the stage
 * that just ended.
 */
export const PATCH_STAGE_ATTRIBUTE_ON_START = 'capstan-stage-attribute-on-start';
/**
 * Runs started from here on reserve a stage's estimate out of the run's budget while it runs, so
 * stages running side by side cannot pass the budget together: a stage starts only if its
 * estimate fits in what is left after what was spent and what the running stages reserved, and a
 * stage paused only for reservations looks again when one is released. Older histories replay
 * without reservations.
 */
export const PATCH_BUDGET_RESERVE = 'capstan-budget-reserve';
