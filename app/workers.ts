import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import { Worker, type NativeConnection, type WorkflowBundleOption } from '@temporalio/worker';
import { DevicePool, resolveDevices, type Device } from '../activities/devices.js';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import type { Logger } from '../lib/logger.js';
import { registerSlotsSignal, slotKeeperId, slotsQuery, unregisterSlotsSignal, type SlotKeeperView } from '../workflows/gang.js';
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
  /** This worker's devices (CAPSTAN_GPUS); detected (nvidia-smi), else cpu:<gpuSlots>, when absent. The gpu queue gets one slot per device. */
  gpus?: Device[];
  /** Lease of this worker's slot reports at the queues' slot keepers (default 60 s; renewed every third). */
  slotLeaseMs?: number;
  identity?: string;
  /** How this host is named in replica metrics (default: the OS host name). */
  host?: string;
}

/**
 * Creates the workers this host serves: the orchestrator (workflows) and the cpu / gpu stage
 * queues. GPU stages get few slots (one per device); CPU stages more.
 */
export async function createWorkers(o: WorkerSetOptions): Promise<Worker[]> {
  const workers: Worker[] = [];
  const devices = o.roles.includes('gpu') ? new DevicePool(o.gpus ?? resolveDevices(undefined, o.gpuSlots ?? 2), o.host ?? os.hostname()) : undefined;
  const acts = createActivities({ ...o.activities, ...(devices ? { devices } : {}) });
  const common = {
    connection: o.connection,
    namespace: o.namespace,
    shutdownGraceTime: o.shutdownGraceTime ?? '30s',
    ...(o.identity ? { identity: o.identity } : {}),
  };
  const slotQueues: { queue: string; slots: number; worker: Worker }[] = [];
  const cpuSlots = o.activitySlots ?? 4;
  // A worker serving workflows and cpu stages polls one queue for both when they share it: the
  // server then hands a stage's task back with the workflow task that scheduled it (eager dispatch).
  const shared = o.roles.includes('workflows') && o.roles.includes('cpu') && o.taskQueues.cpu === o.taskQueues.workflows;
  if (o.roles.includes('workflows')) {
    const w = await Worker.create({
      ...common,
      taskQueue: o.taskQueues.workflows,
      ...(o.workflowBundle ? { workflowBundle: o.workflowBundle } : { workflowsPath }),
      maxCachedWorkflows: 200,
      ...(shared ? { activities: acts, maxConcurrentActivityTaskExecutions: cpuSlots, activityTaskPollerBehavior: eagerPollers(cpuSlots) } : {}),
    });
    workers.push(w);
    if (shared) slotQueues.push({ queue: o.taskQueues.cpu, slots: cpuSlots, worker: w });
  }
  if (o.roles.includes('cpu')) {
    const queues = [...(shared ? [] : [o.taskQueues.cpu]), ...(o.taskQueues.legacyCpu && o.taskQueues.legacyCpu !== o.taskQueues.cpu ? [o.taskQueues.legacyCpu] : [])];
    for (const queue of queues) {
      const w = await Worker.create({ ...common, taskQueue: queue, activities: acts, maxConcurrentActivityTaskExecutions: cpuSlots });
      workers.push(w);
      slotQueues.push({ queue, slots: cpuSlots, worker: w });
    }
  }
  if (devices) {
    const w = await Worker.create({ ...common, taskQueue: o.taskQueues.gpu, activities: acts, maxConcurrentActivityTaskExecutions: devices.size });
    workers.push(w);
    slotQueues.push({ queue: o.taskQueues.gpu, slots: devices.size, worker: w });
  }
  if (slotQueues.length) {
    await reportSlots({
      client: new Client({ connection: o.connection, namespace: o.namespace }),
      workflowsQueue: o.taskQueues.workflows,
      // Unique per worker set: a restarted set in the same process never withdraws the new report.
      identity: `${o.identity ?? `${process.pid}@${os.hostname()}`}#${randomUUID().slice(0, 8)}`,
      leaseMs: o.slotLeaseMs ?? 60_000,
      queues: slotQueues,
      logger: o.activities.logger,
    });
  }
  return workers;
}

/**
 * Activity pollers each hold a slot while they wait, and the server hands a stage's task back with
 * the workflow task's completion only when the worker has a slot free then. The SDK's default
 * (min(10, slots) pollers) leaves none free below 12 slots, so a worker sharing the queue polls
 * with half its slots and keeps the rest for those eager tasks (measured in bench/orchestration.ts).
 */
function eagerPollers(slots: number): { type: 'simple-maximum'; maximum: number } {
  return { type: 'simple-maximum', maximum: Math.max(1, Math.floor(slots / 2)) };
}

/**
 * Reports this worker's slots to each queue's slot keeper (`capstan/slots/<queue>`, started on
 * first report with signalWithStart), renews the report every third of the lease while the
 * queue's worker runs, and withdraws it once that worker has stopped. A worker that dies without
 * withdrawing drops out when its lease ends (docs/adr/0008-gang-scheduling.md).
 */
async function reportSlots(o: {
  client: Client;
  workflowsQueue: string;
  identity: string;
  leaseMs: number;
  queues: { queue: string; slots: number; worker: Worker }[];
  logger: Logger;
}): Promise<void> {
  const send = async (queue: string, slots: number) =>
    o.client.workflow.signalWithStart('slotKeeperWorkflow', {
      workflowId: slotKeeperId(queue),
      taskQueue: o.workflowsQueue,
      args: [{ queue }],
      signal: registerSlotsSignal,
      signalArgs: [{ worker: `${o.identity}/${queue}`, slots, ttlMs: o.leaseMs }],
    });
  // The first report before the workers poll: a run that starts right after sees the capacity.
  await Promise.all(o.queues.map((q) => send(q.queue, q.slots)));
  let last = Date.now();
  const live = new Set(o.queues);
  const timer = setInterval(() => {
    const renew = Date.now() - last >= o.leaseMs / 3;
    if (renew) last = Date.now();
    for (const q of [...live]) {
      const state = q.worker.getState();
      if (state === 'STOPPED' || state === 'FAILED' || state === 'DRAINING' || state === 'DRAINED' || state === 'STOPPING') {
        live.delete(q);
        void o.client.workflow
          .getHandle(slotKeeperId(q.queue))
          .signal(unregisterSlotsSignal, { worker: `${o.identity}/${q.queue}` })
          .catch(() => undefined);
      } else if (renew) {
        send(q.queue, q.slots).catch((e: unknown) => o.logger.warn('could not report slots to the slot keeper', { queue: q.queue, error: (e as Error).message }));
      }
    }
    if (!live.size) clearInterval(timer);
  }, Math.min(1000, o.leaseMs / 6));
  timer.unref();
}

/** What a queue's slot keeper knows (capacity, holders, waiting); undefined when no worker has reported slots. */
export async function queueSlots(client: Client, taskQueue: string): Promise<SlotKeeperView | undefined> {
  try {
    return await client.workflow.getHandle(slotKeeperId(taskQueue)).query(slotsQuery);
  } catch {
    return undefined;
  }
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
