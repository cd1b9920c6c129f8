import path from 'node:path';
import type { ArtifactStore, SharedFolder } from '../lib/artifacts.js';
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
  /** Some report said its CPU seconds are the attempt's whole use (`UsageReport.wholeAttempt`). */
  wholeAttempt: boolean;
}

/**
 * The context one stage attempt runs with: where outputs go, how inputs and checkpoints are
 * found, the services and the meter. The only place that knows how a stage's artifacts are laid
 * out in the store, so plugins never build artifact paths.
 */
export function createStageContext(init: StageContextInit): {
  ctx: StageContext;
  reported: () => ReportedUsage;
  /** Stops keeping this attempt's shared folders in step (also done when its output is written, or it is cancelled). */
  close: () => Promise<void>;
} {
  const { artifacts } = init;
  let cpuSeconds = 0;
  let deviceSeconds: number | undefined;
  let wholeAttempt = false;
  const shared = new Map<string, SharedFolder>();
  const closeShared = async () => {
    const open = [...shared.values()];
    shared.clear();
    await Promise.all(open.map((f) => f.close()));
  };
  // A cancelled attempt stops its shared folders at once.
  init.signal.addEventListener('abort', () => void closeShared().catch(() => undefined), { once: true });
  const finite = (n: number | undefined): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  const ctx: StageContext = {
    runId: init.runId,
    pipeline: init.pipeline,
    stageId: init.stageId,
    attempt: init.attempt,
    ...(init.replica ? { replica: init.replica } : {}),
    ...(init.startedBy
      ? { startedBy: { name: init.startedBy.name, role: init.startedBy.role, ...(init.startedBy.tokenId ? { tokenId: init.startedBy.tokenId } : {}) } }
      : {}),
    ...(init.device
      ? { device: { kind: init.device.kind, id: init.device.id, label: init.device.label, host: init.device.host, env: { ...init.device.env } } }
      : {}),
    heartbeat: init.heartbeat,
    lastCheckpoint: init.lastCheckpoint,
    logger: init.logger,
    signal: init.signal,
    services: init.services,
    meter: {
      add(u: UsageReport) {
        if (finite(u.cpuSeconds)) cpuSeconds += u.cpuSeconds;
        if (finite(u.deviceSeconds)) deviceSeconds = (deviceSeconds ?? 0) + u.deviceSeconds;
        if (u.wholeAttempt) wholeAttempt = true;
      },
    },
    async output(kind, write, opts) {
      try {
        if (opts?.contentAddressed) {
          return await artifacts.writeContentAddressed(
            { kind, namespace: opts.contentAddressed, stagingKey: `${init.runId}-${init.stageId}-${init.attempt}` },
            write,
          );
        }
        return await artifacts.writeOutput({ runId: init.runId, stageId: init.stageId, kind, ...(init.replica ? { replica: init.replica.index } : {}) }, write);
      } finally {
        // The attempt's work is done once its output is written: stop keeping shared folders in step.
        await closeShared();
      }
    },
    // Fetched into the local cache and hash-checked first when the store is remote.
    localPath: (ref) => artifacts.localPath(ref),
    async checkpointDir(opts = {}) {
      let dir = artifacts.checkpointDir(init.runId, init.stageId, opts.shared ? undefined : init.replica?.index);
      // Each operator retry meets in its own shared folder: leftovers of an earlier round never mix in.
      if (opts.shared && init.operatorRound) dir = path.join(dir, `retry-${init.operatorRound}`);
      if (opts.fresh) await artifacts.freshDir(dir);
      // A shared folder is where replicas on several hosts meet: kept in step through the store while this attempt runs.
      if (opts.shared) {
        if (!shared.has(dir)) shared.set(dir, await artifacts.shareFolder(dir));
        return dir;
      }
      return opts.fresh ? dir : artifacts.ensureDir(dir);
    },
    // A remote store also uploads the checkpoint, so a retry on another host can fetch it.
    checkpointUri: (localPath) => artifacts.checkpointUri(localPath),
  };
  return { ctx, reported: () => ({ cpuSeconds, deviceSeconds, wholeAttempt }), close: closeShared };
}
