import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { ArtifactRef } from '../plugins/contract.js';

/**
 * What the run keeps for one stage, measured by the dispatch after an attempt (plugins report
 * nothing): every file under the stage's folders in the run — outputs, checkpoints, round and
 * sync folders, of the stage and of each replica — plus the outputs stored outside the run
 * (content-addressed registry exports). Each attempt measures the whole stage, so the ledger
 * prices the largest value a stage reported, not a sum.
 */
export async function stageBytesKept(artifacts: ArtifactStore, runId: string, stageId: string, outputs: Record<string, ArtifactRef> = {}): Promise<number> {
  const stageDir = path.dirname(artifacts.dirFor(runId, stageId, '_'));
  const runDir = path.dirname(stageDir);
  const name = path.basename(stageDir);
  let bytes = 0;
  let entries: string[] = [];
  try {
    entries = await readdir(runDir);
  } catch {
    entries = [];
  }
  for (const e of entries) {
    if (e === name || e.startsWith(`${name}.replica-`)) bytes += await treeBytes(path.join(runDir, e));
  }
  const inRun = path.resolve(runDir) + path.sep;
  for (const ref of Object.values(outputs)) {
    let abs: string;
    try {
      abs = artifacts.resolve(ref);
    } catch {
      continue;
    }
    if (!abs.startsWith(inRun)) bytes += ref.bytes;
  }
  return bytes;
}

/** Bytes of the regular files under `p` (symlinks not followed; files vanishing meanwhile skipped). */
async function treeBytes(p: string): Promise<number> {
  try {
    const s = await lstat(p);
    if (s.isFile()) return s.size;
    if (!s.isDirectory()) return 0;
    let total = 0;
    for (const e of await readdir(p)) total += await treeBytes(path.join(p, e));
    return total;
  } catch {
    return 0;
  }
}
