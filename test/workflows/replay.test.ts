// Replays recorded histories of representative runs against the current workflow code, so a
// change that would break runs already in flight (a paused run replays on the code deployed when
// it resumes) fails here first. `npm run record-histories` records a new set on a real stack into
// its own dated folder; older sets stay, so every release keeps replaying what earlier code wrote
// (docs/adr/0007-workflow-versioning.md).
import { fileURLToPath } from 'node:url';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { runMetricsSinks, workflowsPath } from '../../app/workers.js';
import { historySets, loadRecorded, SCENARIOS } from './histories.js';

const UNPATCHED = fileURLToPath(new URL('../fixtures/workflows/unpatched.ts', import.meta.url));

async function replay(workflowsFile: string) {
  const recorded = loadRecorded();
  const results = [];
  for await (const r of Worker.runReplayHistories(
    // The runs' metrics sink, as every workflow worker registers it (never called while replaying).
    { workflowsPath: workflowsFile, replayName: 'capstan-replay', sinks: runMetricsSinks() },
    recorded.map(({ meta, history }) => ({ workflowId: meta.workflowId, history })),
  )) {
    results.push({ workflowId: r.workflowId, error: r.error });
  }
  return results.map((r) => {
    const x = recorded.find((y) => y.meta.workflowId === r.workflowId);
    return { ...r, scenario: x ? `${x.set}/${x.meta.scenario}` : '?' };
  });
}

describe('replaying recorded histories against the current workflow code', () => {
  it('has a recorded history for every scenario in the newest set', () => {
    const sets = historySets();
    expect(sets.length).toBeGreaterThan(0);
    const newest = loadRecorded().filter((r) => r.set === sets.at(-1));
    expect(newest.map((r) => r.meta.scenario).sort()).toEqual([...SCENARIOS].sort());
  });

  it('replays every history without a nondeterminism error', { timeout: 120_000 }, async () => {
    const results = await replay(workflowsPath);
    console.info(`[replay] current code: ${results.map((r) => `${r.scenario} ${r.error ? 'FAILED' : 'ok'}`).join(', ')}`);
    expect(results.filter((r) => r.error).map((r) => `${r.scenario}: ${r.error!.message}`)).toEqual([]);
    expect(results.length).toBeGreaterThan(0);
    expect(results).toHaveLength(loadRecorded().length);
  });

  it('fails on a deliberately unpatched change to the workflow (an extra timer first)', { timeout: 120_000 }, async () => {
    const results = await replay(UNPATCHED);
    console.info(`[replay] unpatched copy: ${results.filter((r) => r.error).length}/${results.length} histories refused`);
    // Every recorded history was replayed (none would make the loop below pass by having nothing to check).
    expect(results.length).toBeGreaterThan(0);
    expect(results).toHaveLength(loadRecorded().length);
    for (const r of results) {
      expect(r.error, r.scenario).toBeDefined();
      expect(r.error!.name, r.scenario).toBe('DeterminismViolationError');
    }
  });
});
