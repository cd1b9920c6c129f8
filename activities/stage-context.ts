import path from 'node:path';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { HeldDevice } from './devices.js';
import type { Logger } from '../lib/logger.js';
import type { ReplicaInfo, RunStarter, StageContext, UsageReport } from '../plugins/contract.js';
import type { StageServices } from '../plugins/services.js';

export interface StageContextInit {
  artifacts: ArtifactStore;
  services: StageServices;
  logger: Logger;
  runId: string;
  pipeline: string;
  stageId: string;
  attempt: number;
  replica?: ReplicaInfo;
  startedBy?: RunStarter;
  lastCheckpoint: unknown;
  signal: AbortSignal;
  heartbeat(details?: unknown): void;
  /** The device this attempt holds (gpu stages on a worker with a device pool). */
  device?: HeldDevice;
  /** The operator-retry round (`#<n>` of the activity id; 0 for the first run of the stage). */
  operatorRound?: number;
}

/** The operator-retry round an activity id carries: `stage:fit#2:replica-0` → 2; none → 0. */
export function operatorRoundOf(activityId: string): number {
  const m = /#(\d+)(?::|$)/.exec(activityId);
  return m ? Number(m[1]) : 0;
}

/** What the stage reported through `ctx.meter` (summed). `deviceSeconds` is undefined when nothing reported it. */
export interface ReportedUsage {
  cpuSeconds: number;
  deviceSeconds: number | undefined;
}

/**
 * The context one stage attempt runs with: where outputs go, how inputs and checkpoints are
 * found, the services and the meter. The only place that knows how a stage's artifacts are laid
 * out in the store, so plugins never build artifact paths.
 */
export function createStageContext(init: StageContextInit): { ctx: StageContext; reported: () => ReportedUsage } {
  const { artifacts } = init;
  let cpuSeconds = 0;
  let deviceSeconds: number | undefined;
  const finite = (n: number | undefined): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  const ctx: StageContext = {
    runId: init.runId,
    pipeline: init.pipeline,
    stageId: init.stageId,
    attempt: init.attempt,
    ...(init.replica ? { replica: init.replica } : {}),
    ...(init.startedBy ? { startedBy: { name: init.startedBy.name, role: init.startedBy.role } } : {}),
    ...(init.device ? { device: { kind: init.device.kind, id: init.device.id, label: init.device.label, host: init.device.host, env: { ...init.device.env } } } : {}),
    heartbeat: init.heartbeat,
    lastCheckpoint: init.lastCheckpoint,
    logger: init.logger,
    signal: init.signal,
    services: init.services,
    meter: {
      add(u: UsageReport) {
        if (finite(u.cpuSeconds)) cpuSeconds += u.cpuSeconds;
        if (finite(u.deviceSeconds)) deviceSeconds = (deviceSeconds ?? 0) + u.deviceSeconds;
      },
    },
    output(kind, write, opts) {
      if (opts?.contentAddressed) {
        return artifacts.writeContentAddressed({ kind, namespace: opts.contentAddressed, stagingKey: `${init.runId}-${init.stageId}-${init.attempt}` }, write);
      }
      return artifacts.writeOutput({ runId: init.runId, stageId: init.stageId, kind, ...(init.replica ? { replica: init.replica.index } : {}) }, write);
    },
    localPath: async (ref) => artifacts.resolve(ref),
    async checkpointDir(opts = {}) {
      let dir = artifacts.checkpointDir(init.runId, init.stageId, opts.shared ? undefined : init.replica?.index);
      // Each operator retry meets in its own shared folder: leftovers of an earlier round never mix in.
      if (opts.shared && init.operatorRound) dir = path.join(dir, `retry-${init.operatorRound}`);
      return opts.fresh ? artifacts.freshDir(dir) : artifacts.ensureDir(dir);
    },
    checkpointUri: (localPath) => artifacts.uriOf(localPath),
  };
  return { ctx, reported: () => ({ cpuSeconds, deviceSeconds }) };
}
