// What /metrics reports about runs, read from Temporal visibility at scrape time: runs by pipeline
// and status, and the runs paused now (how long, and whether for their budget). The caller caches
// a snapshot for a few seconds (app/api-metrics.ts), so scrapes never hammer Temporal.
import type { Client } from '@temporalio/client';
import { PipelineNameKey, RunStatusKey } from '../workflows/search-attributes.js';
import type { RunStatus } from '../workflows/types.js';
import { readRun } from './read-model.js';
import { runsQuery, visibilityString } from './run-list.js';

export interface PausedRun {
  runId: string;
  pipeline: string;
  /** Since the run's last RUN_PAUSED event. */
  pausedSeconds: number;
  /** Paused because a budget has no room (a stage's budgetPause is set). */
  budget: boolean;
}

export interface RunMetricsSnapshot {
  counts: { pipeline: string; status: RunStatus; count: number }[];
  paused: PausedRun[];
}

/** Most open runs looked at per scrape; most paused runs read (one query each) per scrape. */
const MAX_OPEN = 10_000;
const MAX_PAUSED_READ = 200;

const CLOSED_STATUS: Record<string, RunStatus> = {
  Completed: 'COMPLETED',
  ContinuedAsNew: 'COMPLETED',
  Failed: 'FAILED',
  Canceled: 'CANCELLED',
  Terminated: 'TERMINATED',
  TimedOut: 'TIMED_OUT',
};

/**
 * Reads run counts from visibility. Closed runs are counted per pipeline (`count … GROUP BY
 * ExecutionStatus`); the pipelines are the ones this reader has seen: it lists the runs started
 * since its last read (all runs on the first), keeping only their names, so each read costs one
 * small listing, the open runs, and one count per pipeline.
 */
export class RunMetricsReader {
  private readonly pipelines = new Set<string>();
  private seenUntil: string | undefined;

  constructor(private readonly client: Client) {}

  async read(now = new Date()): Promise<RunMetricsSnapshot> {
    await this.learnPipelines(now);
    const counts = new Map<string, number>();
    const add = (pipeline: string, status: RunStatus, n: number) =>
      counts.set(`${status}\u0000${pipeline}`, (counts.get(`${status}\u0000${pipeline}`) ?? 0) + n);
    // Open runs: RUNNING or PAUSED (Capstan's own status attribute says which).
    const pausedIds: { id: string; pipeline: string }[] = [];
    let n = 0;
    for await (const w of this.client.workflow.list({ query: `${runsQuery({})} AND ExecutionStatus = 'Running'` })) {
      if (++n > MAX_OPEN) break;
      const pipeline = String(w.typedSearchAttributes.get(PipelineNameKey) ?? '');
      this.pipelines.add(pipeline);
      const paused = w.typedSearchAttributes.get(RunStatusKey) === 'PAUSED';
      add(pipeline, paused ? 'PAUSED' : 'RUNNING', 1);
      if (paused) pausedIds.push({ id: w.workflowId, pipeline });
    }
    for (const pipeline of this.pipelines) {
      for (const [status, count] of await this.closedCounts(pipeline)) add(pipeline, status, count);
    }
    const paused: PausedRun[] = [];
    for (const p of pausedIds.slice(0, MAX_PAUSED_READ)) {
      const run = await readRun(this.client, p.id).catch(() => undefined);
      if (run?.status !== 'PAUSED') continue;
      const at = run.events.filter((e) => e.type === 'RUN_PAUSED').at(-1)?.at;
      paused.push({
        runId: p.id,
        pipeline: run.pipeline || p.pipeline,
        pausedSeconds: at ? Math.max(0, (now.getTime() - Date.parse(at)) / 1000) : 0,
        budget: run.stages.some((s) => s.budgetPause !== undefined),
      });
    }
    return {
      counts: [...counts].map(([k, count]) => {
        const [status, pipeline] = k.split('\u0000') as [RunStatus, string];
        return { pipeline, status, count };
      }),
      paused,
    };
  }

  /** Adds the pipelines of runs started since the last read (all runs' on the first). */
  private async learnPipelines(now: Date): Promise<void> {
    // A minute of overlap: visibility is eventually consistent.
    const since = this.seenUntil ? ` AND StartTime >= ${visibilityString(new Date(Date.parse(this.seenUntil) - 60_000).toISOString())}` : '';
    for await (const w of this.client.workflow.list({ query: `${runsQuery({})}${since}` })) {
      this.pipelines.add(String(w.typedSearchAttributes.get(PipelineNameKey) ?? ''));
    }
    this.seenUntil = now.toISOString();
  }

  /** Closed runs of one pipeline by status: one grouped count (or one count per status where grouping is not supported). */
  private async closedCounts(pipeline: string): Promise<[RunStatus, number][]> {
    const base = `${runsQuery({ pipeline })} AND ExecutionStatus != 'Running'`;
    try {
      const r = await this.client.workflow.count(`${base} GROUP BY ExecutionStatus`);
      const out = new Map<RunStatus, number>();
      for (const g of r.groups) {
        const status = CLOSED_STATUS[String(g.groupValues[0])];
        if (status) out.set(status, (out.get(status) ?? 0) + g.count);
      }
      return [...out];
    } catch {
      const out: [RunStatus, number][] = [];
      for (const [name, status] of Object.entries(CLOSED_STATUS)) {
        const r = await this.client.workflow.count(`${runsQuery({ pipeline })} AND ExecutionStatus = ${visibilityString(name)}`);
        if (r.count) out.push([status, r.count]);
      }
      return out;
    }
  }
}
