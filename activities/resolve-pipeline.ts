import { ApplicationFailure } from '@temporalio/activity';
import { resolveSpec, SpecValidationError } from '../engine/spec.js';
import { Context } from '@temporalio/activity';
import type { LedgerService } from '../ledger/meter.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { ScheduledPipelineInput } from '../workflows/types.js';

/**
 * Resolves a stored spec against the plugins installed now (a schedule's firing): newest plugin
 * versions, current defaults. An invalid spec fails non-retryably with every issue named.
 */
export function resolvePipelineActivity(stages: StageRegistry, ledger?: Pick<LedgerService, 'priceSheet' | 'saveRoiWatch'>) {
  return async function resolvePipeline(input: ScheduledPipelineInput) {
    try {
      const { parsedParams: _parsed, watch, ...resolved } = resolveSpec(input.spec, stages, { taskQueues: input.taskQueues, ...(ledger ? { priceSheet: ledger.priceSheet } : {}) });
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
