// What one stage attempt uses, measured and metered: the worker's CPU shared between attempts
// running side by side (cpu-share.ts), what the stage reported (a child's CPU, device time), work
// still running, and the usage records written to the meter — partial ones as the attempt runs,
// the final one when it ends. Budgets read `soFar()` (run-stage.ts's budget guard).
import type { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/activity';
import { StageError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { StagePlugin, StageResult, StageUsageMeter } from '../plugins/contract.js';
import type { RunStageInput } from '../workflows/types.js';
import { stageBytesKept } from './bytes-kept.js';
import { type CpuShare, shareWorkerCpu } from './cpu-share.js';
import type { HeldDevice } from './devices.js';
import type { StageMeter, StageUsage } from './run-stage.js';
import type { ReportedUsage } from './stage-context.js';

export interface AttemptUsage {
  /** The stage context's meter with running usage (a training child's CPU so far) tracked here. */
  meter(inner: StageUsageMeter): StageUsageMeter;
  /** Starts measuring: the wall clock, and the attempt's share of the worker's CPU (which finish() leaves). */
  start(): void;
  /** Runs the plugin in the attempt's own async context, where the worker's CPU is shared per attempt. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** CPU and GPU seconds so far, what a budget prices. */
  soFar(): { cpuSeconds: number; gpuSeconds: number };
  /** The plugin's result once it has one (its outputs' bytes count). */
  succeeded(result: StageResult): void;
  /** Writes a partial record (one write at a time; a call while one is going is skipped). */
  writePartial(): void;
  /**
   * Ends the measurement and writes the final record, which replaces the partial ones. The meter
   * writes durably (the ledger outbox) before the attempt is acknowledged: if it cannot, a
   * successful attempt fails retryably (USAGE_NOT_RECORDED) rather than lose its usage.
   */
  finish(): Promise<void>;
}

export function attemptUsage(o: {
  meter: StageMeter | undefined;
  artifacts: ArtifactStore;
  logger: Logger;
  input: RunStageInput;
  plugin: StagePlugin<unknown>;
  info: Context['info'];
  device: HeldDevice | undefined;
  reported: () => ReportedUsage;
}): AttemptUsage {
  const { input, plugin, info, device, reported } = o;
  const stage = input.stage;
  // Usage of work still running (a training child's CPU so far), replaced by each report.
  let live = { cpuSeconds: 0, whole: false };
  let result: StageResult | undefined;
  let wall0 = performance.now();
  // This attempt's share of the worker's own CPU time (attempts side by side on this worker split
  // it), unless the stage measured all of its work by pid. Joined by start(), left by finish().
  const measuredByPid = () => reported().wholeAttempt || live.whole;
  let share: CpuShare | undefined;
  const workerCpu = (seconds: number) => (measuredByPid() ? 0 : seconds);
  const soFar = () => {
    const wallSeconds = (performance.now() - wall0) / 1000;
    return {
      cpuSeconds: workerCpu(share?.seconds() ?? 0) + reported().cpuSeconds + live.cpuSeconds,
      gpuSeconds: device?.kind === 'gpu' ? (reported().deviceSeconds ?? wallSeconds) : 0,
    };
  };
  // What the attempt used so far as a usage record; `final` after it ended.
  const record = (final?: { cpuSeconds: number; bytesKept: number | undefined }): StageUsage => {
    const extra = reported();
    const wallSeconds = (performance.now() - wall0) / 1000;
    return {
      runId: input.runId,
      pipeline: input.pipeline,
      stageId: stage.id,
      plugin: plugin.name,
      attempt: info.attempt,
      ...(input.replica ? { replica: input.replica.index } : {}),
      activityId: info.activityId,
      ...(info.workflowExecution ? { workflowRunId: info.workflowExecution.runId } : {}),
      resource: plugin.resource,
      ...(device?.kind === 'gpu' ? { gpuDevices: [device.id] } : {}),
      wallSeconds,
      // A child still running when the attempt ended (killed by a stop) counts with what it used so far.
      cpuSeconds: final ? final.cpuSeconds : soFar().cpuSeconds,
      deviceSeconds: extra.deviceSeconds ?? wallSeconds,
      bytesWritten: Object.values(result?.outputs ?? {}).reduce((n, r) => n + r.bytes, 0),
      ...(final ? (final.bytesKept !== undefined ? { bytesKept: final.bytesKept } : {}) : {}),
      succeeded: final ? result !== undefined : false,
      ...(final ? {} : { partial: true }),
    };
  };
  // Usage is written to the meter as it accrues, at every tick of the attempt's heartbeat, so a
  // worker killed outright loses at most one interval of it.
  let partialWrite: Promise<void> | undefined;
  return {
    meter: (inner) => ({
      add: (u) => {
        inner.add(u);
        live = { cpuSeconds: 0, whole: false };
      },
      running: (u) => {
        if (typeof u.cpuSeconds === 'number' && Number.isFinite(u.cpuSeconds) && u.cpuSeconds >= 0)
          live = { cpuSeconds: u.cpuSeconds, whole: u.wholeAttempt === true };
      },
    }),
    start() {
      wall0 = performance.now();
      share = shareWorkerCpu(measuredByPid);
    },
    run: (fn) => (share ? share.run(fn) : fn()),
    soFar,
    succeeded: (r) => void (result = r),
    writePartial() {
      if (!o.meter || partialWrite) return;
      partialWrite = o.meter
        .recordUsage(record())
        .catch((e: unknown) => o.logger.warn('could not record usage so far', { stage: stage.id, error: (e as Error).message }))
        .finally(() => {
          partialWrite = undefined;
        });
    },
    async finish() {
      const workerSeconds = share?.leave() ?? 0;
      if (!o.meter) return;
      const cpuSeconds = workerCpu(workerSeconds) + reported().cpuSeconds + live.cpuSeconds;
      const bytesKept = await stageBytesKept(o.artifacts, input.runId, stage.id, result?.outputs);
      // The final record is written after the last partial one.
      await partialWrite;
      try {
        await o.meter.recordUsage(record({ cpuSeconds, bytesKept }));
      } catch (e) {
        o.logger.error('could not record stage usage', { stage: stage.id, error: (e as Error).message });
        const invalid = e instanceof StageError && !e.retryable;
        if (result !== undefined && !invalid)
          throw ApplicationFailure.retryable(`stage ${stage.id}: usage not recorded: ${(e as Error).message}`, 'USAGE_NOT_RECORDED');
      }
    },
  };
}
