// Recorded workflow histories: where they live, which scenarios a set has, how to load them.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';

export const ROOT = path.resolve(import.meta.dirname, '../fixtures/histories');
/** Where a recording goes: a new folder per recording (CAPSTAN_HISTORY_SET, default today's date). */
export const RECORD_DIR = path.join(ROOT, process.env.CAPSTAN_HISTORY_SET ?? new Date().toISOString().slice(0, 10));

export interface Recorded {
  scenario: string;
  workflowId: string;
  file: string;
}

/** The scenarios every release must still replay: one run each, driven through the API. */
export const SCENARIOS = [
  'completed',
  'paused-then-retried',
  'skipped',
  'aborted',
  'resumed',
  'cancelled',
  'data-parallel',
  'pause-timed-out',
  'budget-raised',
] as const;

/** Every recorded set, oldest first. */
export function historySets(): string[] {
  return readdirSync(ROOT, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(path.join(ROOT, d.name, 'index.json')))
    .map((d) => d.name)
    .sort();
}

export function loadRecorded(): { set: string; meta: Recorded; history: temporal.api.history.v1.History }[] {
  return historySets().flatMap((set) => {
    const dir = path.join(ROOT, set);
    const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as Recorded[];
    return index.map((meta) => ({ set, meta, history: temporal.api.history.v1.History.decode(readFileSync(path.join(dir, meta.file))) }));
  });
}
