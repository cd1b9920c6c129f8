import type { ArtifactStore } from '../lib/artifacts.js';
import type { ArtifactRef } from '../plugins/contract.js';

/**
 * What the run keeps for one stage, measured by the dispatch after an attempt (plugins report
 * nothing): every file under the stage's folders in the run — outputs, checkpoints, round and
 * sync folders, of the stage and of each replica — plus the outputs stored outside the run
 * (content-addressed registry exports). The store measures: the local folder on disk, an S3
 * store in its bucket. Each attempt measures the whole stage, so the ledger prices the largest
 * value a stage reported, not a sum.
 */
export async function stageBytesKept(artifacts: ArtifactStore, runId: string, stageId: string, outputs: Record<string, ArtifactRef> = {}): Promise<number> {
  let bytes = await artifacts.stageBytes(runId, stageId);
  for (const ref of Object.values(outputs)) if (!artifacts.inRun(runId, ref)) bytes += ref.bytes;
  return bytes;
}
