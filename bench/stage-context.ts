import { createStageContext } from '../activities/stage-context.js';
import type { ArtifactStore } from '../lib/artifacts.js';
import { silentLogger } from '../lib/logger.js';
import type { StageContext } from '../plugins/contract.js';
import type { StageServices } from '../plugins/services.js';

/** A stage context for running the ML stage plugins directly in a benchmark (no Temporal, no services). */
export function benchStageContext(store: ArtifactStore, runId: string, stageId: string, replica?: { index: number; count: number }): StageContext {
  return createStageContext({
    artifacts: store,
    services: {} as StageServices, // the ML stages use none
    logger: silentLogger,
    runId,
    pipeline: runId,
    stageId,
    attempt: 1,
    ...(replica ? { replica } : {}),
    lastCheckpoint: undefined,
    signal: new AbortController().signal,
    heartbeat: () => undefined,
  }).ctx;
}
