// Glue shared by the ML stage plugins: error mapping and checkpoint references.
// No Temporal imports: StageError is a plain error class the activity layer translates.
import path from 'node:path';
import type { ArtifactStore } from '../../lib/artifacts.js';
import { StageError, badInput } from '../../lib/errors.js';
import { DataError } from '../data/data-error.js';
import { ChildJobError } from './child-runner.js';

/** Turns data and child-process failures into StageErrors with retry intent. */
export function toStageError(e: unknown): unknown {
  if (e instanceof StageError) return e;
  if (e instanceof DataError) return badInput(e.message, e.code, e.file ? { file: e.file } : undefined);
  if (e instanceof ChildJobError) {
    return new StageError(e.message, { type: e.code, retryable: e.retryable, ...(e.file ? { details: { file: e.file } } : {}) });
  }
  return e;
}

/** `artifact:` reference of a path inside the store (for heartbeat details: small, host-independent). */
export function artifactUri(store: ArtifactStore, abs: string): string {
  const rel = path.relative(store.root, abs).split(path.sep).join('/');
  if (rel.startsWith('..')) throw new Error(`${abs} is outside the artifact store`);
  return `artifact:${rel}`;
}

/** Small scalar metrics only: drops NaN/Infinity, rounds floats to 6 significant digits. */
export function cleanMetrics(m: Record<string, number | string | boolean | undefined>): Record<string, number | string | boolean> {
  const out: Record<string, number | string | boolean> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) continue;
      out[k] = Number.isInteger(v) ? v : Number(v.toPrecision(6));
    } else out[k] = v;
  }
  return out;
}
