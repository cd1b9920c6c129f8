// The floor for the stage gap: a bare workflow that runs N no-op activities one after another,
// on a task queue it is told (its own, or a separate one). bench/orchestration.ts bundles it.
import { proxyActivities } from '@temporalio/workflow';

export interface BareActivities {
  noop(): Promise<{ startedAt: number; endedAt: number }>;
}

export async function bareChainWorkflow(o: { n: number; taskQueue: string }): Promise<{ startedAt: number; endedAt: number }[]> {
  const { noop } = proxyActivities<BareActivities>({ taskQueue: o.taskQueue, startToCloseTimeout: '30 seconds' });
  const out = [];
  for (let i = 0; i < o.n; i++) out.push(await noop());
  return out;
}
