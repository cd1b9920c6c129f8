import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import { OpenTelemetryPlugin } from '@temporalio/interceptors-opentelemetry';
import { Worker, type InjectedSinks, type NativeConnection, type WorkflowBundleOption } from '@temporalio/worker';
import { DevicePool, resolveDevices, type Device } from '../activities/devices.js';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import type { Logger } from '../lib/logger.js';
import { activeTracing, type Tracing } from '../lib/telemetry/tracing.js';
import { noWorkerMetrics, type WorkerMetrics } from '../lib/telemetry/worker-metrics.js';
import { METRICS_SINK, type RunMetricsSink } from '../workflows/metrics-sink.js';
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
  /** How long gangs may hold more than the live capacity before the keeper revokes the newest (default: the lease). */
  slotRevokeAfterMs?: number;
  /**
   * Where this worker records the slot reports it made (`<data dir>/workers`): the next worker on
   * the same data folder and host withdraws those of a worker that died (SIGKILL) at once, instead
   * of the keeper counting them until their lease ends. None: nothing recorded.
   */
  slotRecordsDir?: string;
  identity?: string;
  /** How this host is named in replica metrics (default: the OS host name). */
  host?: string;
  /** The worker's Prometheus metrics (lib/telemetry/worker-metrics.ts); none: counted nowhere. */
  metrics?: WorkerMetrics;
  /** This process's tracing (lib/telemetry/tracing.ts); default: the one started in this process, if any. None: no tracing interceptors. */
  tracing?: Tracing;
}

/**
 * The runs' metrics sink (workflows/metrics-sink.ts), registered on every workflow worker whether
 * metrics are on or not, so workflow code never calls a sink that is not there. Not called while a
 * history replays, so a run rebuilt from its history counts nothing twice.
 */
export function runMetricsSinks(m: WorkerMetrics = noWorkerMetrics): InjectedSinks<RunMetricsSink> {
  return {
    [METRICS_SINK]: {
      paused: { fn: (_info, pipeline, code) => m.runPaused(pipeline, code) },
      budgetPaused: { fn: (_info, pipeline) => m.budgetPaused(pipeline) },
      slotWaited: { fn: (_info, queue, seconds) => m.slotWaited(queue, seconds) },
      finished: { fn: (_info, pipeline, status) => m.runFinished(pipeline, status) },
    },
  };
}

/**
 * Temporal's OpenTelemetry interceptors for a worker (or a replay worker): the workflow's span
 * and each activity's continue the trace of the client call that started the run (headers carry
 * the context); workflow spans leave the sandbox through a sink into this process's span
 * processor. The workflow interceptors issue no commands, so runs started without tracing replay
 * with them installed (test/telemetry/replay-traced.test.ts).
 */
export function tracingPlugins(tracing: Tracing | undefined): { plugins?: OpenTelemetryPlugin[] } {
  return tracing ? { plugins: [new OpenTelemetryPlugin({ resource: tracing.resource, spanProcessor: tracing.spanProcessor })] } : {};
}

/**
 * Creates the workers this host serves: the orchestrator (workflows) and the cpu / gpu stage
 * queues. GPU stages get few slots (one per device); CPU stages more.
 */
export async function createWorkers(o: WorkerSetOptions): Promise<Worker[]> {
  const workers: Worker[] = [];
  const devices = o.roles.includes('gpu') ? new DevicePool(o.gpus ?? resolveDevices(undefined, o.gpuSlots ?? 2), o.host ?? os.hostname()) : undefined;
  const acts = createActivities({ ...o.activities, ...(devices ? { devices } : {}), ...(o.metrics ? { metrics: o.metrics } : {}) });
  const common = {
    connection: o.connection,
    namespace: o.namespace,
    shutdownGraceTime: o.shutdownGraceTime ?? '30s',
    ...tracingPlugins(o.tracing ?? activeTracing()),
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
      sinks: runMetricsSinks(o.metrics),
      ...(shared ? { activities: acts, maxConcurrentActivityTaskExecutions: cpuSlots, activityTaskPollerBehavior: eagerPollers(cpuSlots) } : {}),
    });
    workers.push(w);
    if (shared) slotQueues.push({ queue: o.taskQueues.cpu, slots: cpuSlots, worker: w });
  }
  if (o.roles.includes('cpu')) {
    const queues = [
      ...(shared ? [] : [o.taskQueues.cpu]),
      ...(o.taskQueues.legacyCpu && o.taskQueues.legacyCpu !== o.taskQueues.cpu ? [o.taskQueues.legacyCpu] : []),
    ];
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
      ...(o.slotRevokeAfterMs !== undefined ? { revokeAfterMs: o.slotRevokeAfterMs } : {}),
      ...(o.slotRecordsDir ? { recordsDir: o.slotRecordsDir } : {}),
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

/** Withdraws a worker's slot reports (set by reportSlots; runWorkers awaits it once the worker has stopped). */
const withdrawals = new WeakMap<Worker, () => Promise<void>>();

/** What a worker leaves in the records folder while it runs: the reports a successor withdraws if it dies. */
interface SlotRecord {
  pid: number;
  host: string;
  /** Names of its reports at the keepers, per queue. */
  reports: { queue: string; worker: string }[];
  startedAt: string;
}

/**
 * Reports this worker's slots to each queue's slot keeper (`capstan/slots/<queue>`, started on
 * first report with signalWithStart), renews the report every third of the lease while the
 * queue's worker runs, and withdraws it once that worker drains or stops (runWorkers awaits the
 * withdrawal, so a clean stop never leaves a report behind). A worker that dies without
 * withdrawing drops out when its lease ends — or at once, when the next worker on the same data
 * folder and host starts and finds its record (docs/adr/0008-gang-scheduling.md).
 */
async function reportSlots(o: {
  client: Client;
  workflowsQueue: string;
  identity: string;
  leaseMs: number;
  revokeAfterMs?: number;
  recordsDir?: string;
  queues: { queue: string; slots: number; worker: Worker }[];
  logger: Logger;
}): Promise<void> {
  const name = (queue: string) => `${o.identity}/${queue}`;
  const send = async (queue: string, slots: number) =>
    o.client.workflow.signalWithStart('slotKeeperWorkflow', {
      workflowId: slotKeeperId(queue),
      taskQueue: o.workflowsQueue,
      args: [{ queue }],
      signal: registerSlotsSignal,
      signalArgs: [{ worker: name(queue), slots, ttlMs: o.leaseMs, ...(o.revokeAfterMs !== undefined ? { revokeAfterMs: o.revokeAfterMs } : {}) }],
    });
  const unregister = (queue: string, worker: string) => o.client.workflow.getHandle(slotKeeperId(queue)).signal(unregisterSlotsSignal, { worker });
  // The first report before the workers poll: a run that starts right after sees the capacity.
  await Promise.all(o.queues.map((q) => send(q.queue, q.slots)));
  // Then the reports of a worker on this folder that died: the keeper no longer counts slots no one has.
  const record = o.recordsDir ? path.join(o.recordsDir, `${o.identity.replace(/[^\w.@-]/g, '_')}.json`) : undefined;
  if (o.recordsDir && record) {
    await withdrawDeadPredecessors(o.recordsDir, unregister, o.logger);
    mkdirSync(o.recordsDir, { recursive: true });
    const mine: SlotRecord = {
      pid: process.pid,
      host: os.hostname(),
      reports: o.queues.map((q) => ({ queue: q.queue, worker: name(q.queue) })),
      startedAt: new Date().toISOString(),
    };
    writeFileSync(record, `${JSON.stringify(mine)}\n`);
  }
  let last = Date.now();
  const live = new Set(o.queues);
  const withdraw = async (q: (typeof o.queues)[number]) => {
    if (!live.delete(q)) return;
    if (!live.size && record) rmSync(record, { force: true });
    await unregister(q.queue, name(q.queue)).catch(() => undefined);
  };
  for (const q of o.queues) withdrawals.set(q.worker, () => withdraw(q));
  const timer = setInterval(
    () => {
      const renew = Date.now() - last >= o.leaseMs / 3;
      if (renew) last = Date.now();
      for (const q of [...live]) {
        const state = q.worker.getState();
        if (state === 'STOPPED' || state === 'FAILED' || state === 'DRAINING' || state === 'DRAINED' || state === 'STOPPING') {
          void withdraw(q);
        } else if (renew) {
          send(q.queue, q.slots).catch((e: unknown) =>
            o.logger.warn('could not report slots to the slot keeper', { queue: q.queue, error: (e as Error).message }),
          );
        }
      }
      if (!live.size) clearInterval(timer);
    },
    Math.min(1000, o.leaseMs / 6),
  );
  timer.unref();
}

/**
 * Withdraws the slot reports recorded by workers of this host that are no longer running (killed
 * with their stack), and removes their records. A record of a live process is left alone: two
 * live workers on one folder never withdraw each other's reports (a reused pid only delays the
 * withdrawal to the lease's end).
 */
async function withdrawDeadPredecessors(dir: string, unregister: (queue: string, worker: string) => Promise<void>, logger: Logger): Promise<void> {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return;
  }
  for (const f of files) {
    const file = path.join(dir, f);
    let rec: SlotRecord;
    try {
      rec = JSON.parse(readFileSync(file, 'utf8')) as SlotRecord;
    } catch {
      continue;
    }
    if (rec.host !== os.hostname() || !Number.isInteger(rec.pid) || processAlive(rec.pid)) continue;
    const done = await Promise.allSettled((rec.reports ?? []).map((r) => unregister(r.queue, r.worker)));
    rmSync(file, { force: true });
    const queues = (rec.reports ?? []).map((r) => r.queue).join(', ');
    logger.info(`withdrew the slot reports of a worker that is gone (pid ${rec.pid}, started ${rec.startedAt}) on ${queues}`, {
      withdrawn: done.filter((d) => d.status === 'fulfilled').length,
    });
  }
}

/** Whether a process with this pid exists (EPERM: it does, someone else's). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What a queue's slot keeper knows (capacity, holders, waiting); undefined when no worker has reported slots. */
export async function queueSlots(client: Client, taskQueue: string): Promise<SlotKeeperView | undefined> {
  try {
    return await client.workflow.getHandle(slotKeeperId(taskQueue)).query(slotsQuery);
  } catch {
    return undefined;
  }
}

/** Runs all workers until shutdown; if one fails the others are shut down too. A stopped worker's slot reports are withdrawn before this returns. */
export async function runWorkers(workers: Worker[]): Promise<void> {
  try {
    await Promise.all(workers.map((w) => w.run().finally(() => withdrawals.get(w)?.())));
  } catch (e) {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    throw e;
  }
}
