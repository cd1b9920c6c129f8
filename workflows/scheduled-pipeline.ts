import { makeContinueAsNewFunc, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { runPipelineWorkflow } from './run-pipeline.js';
import type { ScheduledPipelineInput } from './types.js';

/**
 * What a schedule starts: the stored spec is resolved against the plugins installed at this
 * firing (an activity on a stage worker, which has the registry), then the run continues as a
 * `runPipelineWorkflow` under the same workflow id. A plugin upgrade between firings therefore
 * never strands later runs on a version that is gone.
 */
export async function startScheduledPipelineWorkflow(input: ScheduledPipelineInput): Promise<never> {
  const { resolvePipeline } = proxyActivities<Activities>({
    taskQueue: input.taskQueues.cpu,
    startToCloseTimeout: '1 minute',
    retry: { maximumAttempts: 5, nonRetryableErrorTypes: ['SPEC_INVALID'] },
  });
  const resolved = await resolvePipeline(input);
  const run = makeContinueAsNewFunc<typeof runPipelineWorkflow>({ workflowType: 'runPipelineWorkflow', taskQueue: workflowInfo().taskQueue });
  return run(resolved);
}
