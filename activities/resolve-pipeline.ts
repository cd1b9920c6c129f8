import { ApplicationFailure } from '@temporalio/activity';
import { resolveSpec, SpecValidationError } from '../engine/spec.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { ScheduledPipelineInput } from '../workflows/types.js';

/**
 * Resolves a stored spec against the plugins installed now (a schedule's firing): newest plugin
 * versions, current defaults. An invalid spec fails non-retryably with every issue named.
 */
export function resolvePipelineActivity(stages: StageRegistry) {
  return async function resolvePipeline(input: ScheduledPipelineInput) {
    try {
      return { ...resolveSpec(input.spec, stages, { taskQueues: input.taskQueues }), ...(input.startedBy ? { startedBy: input.startedBy } : {}) };
    } catch (e) {
      if (e instanceof SpecValidationError) {
        throw ApplicationFailure.nonRetryable(e.message, 'SPEC_INVALID', { issues: e.issues });
      }
      throw e;
    }
  };
}
