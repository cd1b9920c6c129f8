import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ArtifactStore } from '../../lib/artifacts.js';
import { silentLogger } from '../../lib/logger.js';
import type { ReplicaInfo, StageContext } from '../../plugins/contract.js';

export async function tmpStore(): Promise<{ store: ArtifactStore; root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-ml-'));
  return { store: new ArtifactStore(root), root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export interface TestContext extends StageContext {
  beats: unknown[];
}

/** A hand-made StageContext: the artifact store on a tmp dir, heartbeats recorded. */
export function makeContext(opts: {
  store: ArtifactStore;
  runId?: string;
  stageId: string;
  attempt?: number;
  lastCheckpoint?: unknown;
  replica?: ReplicaInfo;
  signal?: AbortSignal;
}): TestContext {
  const beats: unknown[] = [];
  return {
    runId: opts.runId ?? 'run-1',
    pipeline: 'test',
    stageId: opts.stageId,
    attempt: opts.attempt ?? 1,
    ...(opts.replica ? { replica: opts.replica } : {}),
    artifacts: opts.store,
    heartbeat: (d?: unknown) => beats.push(d),
    lastCheckpoint: opts.lastCheckpoint,
    logger: silentLogger,
    signal: opts.signal ?? new AbortController().signal,
    services: {},
    beats,
  };
}
