import { ApplicationFailure } from '@temporalio/activity';
import { resolveSpec, SpecValidationError } from '../engine/spec.js';
import { Context } from '@temporalio/activity';
import type { LedgerService } from '../ledger/meter.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { ScheduledPipelineInput } from '../workflows/types.js';

/** Whether an API token is still active (TokenStore.isActive). */
export interface TokenChecker {
  isActive(tokenId: string): Promise<boolean>;
}

/**
 * Resolves a stored spec against the plugins installed now (a schedule's firing): newest plugin
 * versions, current defaults. An invalid spec fails non-retryably with every issue named.
 * A schedule acts with its creator's rights, so it fires only while the creator's token is active:
 * with the token revoked or expired, the firing fails (SCHEDULE_CREATOR_INACTIVE) before any stage.
 */
export function resolvePipelineActivity(stages: StageRegistry, ledger?: Pick<LedgerService, 'priceSheet' | 'saveRoiWatch'>, tokens?: TokenChecker) {
  return async function resolvePipeline(input: ScheduledPipelineInput) {
    await checkCreator(input, tokens);
    try {
      const {
        parsedParams: _parsed,
        watch,
        ...resolved
      } = resolveSpec(input.spec, stages, { taskQueues: input.taskQueues, ...(ledger ? { priceSheet: ledger.priceSheet } : {}) });
      // The firing continues as new under the schedule's workflow id: that id is the run's.
      const runId = Context.current().info.workflowExecution?.workflowId;
      if (watch && ledger && runId) await ledger.saveRoiWatch({ runId, pipeline: resolved.pipeline, ...watch });
      return { ...resolved, ...(input.startedBy ? { startedBy: input.startedBy } : {}) };
    } catch (e) {
      if (e instanceof SpecValidationError) {
        throw ApplicationFailure.nonRetryable(e.message, 'SPEC_INVALID', { issues: e.issues });
      }
      throw e;
    }
  };
}

/**
 * Refuses a firing whose creator's token is no longer active. Schedules made with auth off ('-')
 * or before tokens were recorded on them have no token to check; a worker built without a token
 * store (no database of tokens) does not check.
 */
async function checkCreator(input: ScheduledPipelineInput, tokens: TokenChecker | undefined): Promise<void> {
  const id = input.startedBy?.tokenId;
  if (!tokens || !id || id === '-') return;
  if (await tokens.isActive(id)) return;
  throw ApplicationFailure.nonRetryable(
    `schedule skipped: the token that created it (${input.startedBy!.name}, id ${id}) is revoked or expired, so it starts no run; an operator with an active token re-creates the schedule`,
    'SCHEDULE_CREATOR_INACTIVE',
    { tokenId: id },
  );
}
