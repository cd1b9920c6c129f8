import { fileURLToPath } from 'node:url';
import { Worker, type NativeConnection, type WorkflowBundleOption } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import type { CapstanConfig } from './config.js';

export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

export interface WorkerSetOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueues: CapstanConfig['taskQueues'];
  roles: CapstanConfig['workerRoles'];
  activities: ActivityDeps;
  /** A pre-built bundle (tests build it once); bundled from workflows/ at start otherwise. */
  workflowBundle?: WorkflowBundleOption;
  shutdownGraceTime?: string;
  activitySlots?: number;
  gpuSlots?: number;
  identity?: string;
}

/**
 * Creates the workers this host serves: the orchestrator (workflows) and the cpu / gpu stage
 * queues. GPU stages get few slots (one per device); CPU stages more.
 */
export async function createWorkers(o: WorkerSetOptions): Promise<Worker[]> {
  const acts = createActivities(o.activities);
  const workers: Worker[] = [];
  const common = {
    connection: o.connection,
    namespace: o.namespace,
    shutdownGraceTime: o.shutdownGraceTime ?? '30s',
    ...(o.identity ? { identity: o.identity } : {}),
  };
  if (o.roles.includes('workflows')) {
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: o.taskQueues.workflows,
        ...(o.workflowBundle ? { workflowBundle: o.workflowBundle } : { workflowsPath }),
        maxCachedWorkflows: 200,
      }),
    );
  }
  if (o.roles.includes('cpu')) {
    workers.push(await Worker.create({ ...common, taskQueue: o.taskQueues.cpu, activities: acts, maxConcurrentActivityTaskExecutions: o.activitySlots ?? 4 }));
  }
  if (o.roles.includes('gpu')) {
    workers.push(await Worker.create({ ...common, taskQueue: o.taskQueues.gpu, activities: acts, maxConcurrentActivityTaskExecutions: o.gpuSlots ?? 2 }));
  }
  return workers;
}

/** Runs all workers until shutdown; if one fails the others are shut down too. */
export async function runWorkers(workers: Worker[]): Promise<void> {
  try {
    await Promise.all(workers.map((w) => w.run()));
  } catch (e) {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    throw e;
  }
}
