import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { RUN_WORKFLOW_TYPES } from './read-model.js';
import { PipelineNameKey, RunStatusKey } from '../workflows/search-attributes.js';
import type { RunStatus } from '../workflows/types.js';
import { EngineError } from './errors.js';

/** What visibility knows of a run without asking the workflow. */
export interface RunListItem {
  id: string;
  runId: string;
  pipeline: string;
  status: RunStatus;
  startedAt: string;
  closedAt?: string;
}

export interface RunFilter {
  pipeline?: string;
  status?: RunStatus;
}

/** One page of runs, newest first. Every item carries a cursor that `after` accepts. */
export interface RunPage {
  items: { run: RunListItem; cursor: string }[];
  hasNextPage: boolean;
  hasPreviousPage: boolean;
}

const STATUS_QUERY: Record<RunStatus, string> = {
  RUNNING: `ExecutionStatus = 'Running' AND ${RunStatusKey.name} = 'RUNNING'`,
  PAUSED: `ExecutionStatus = 'Running' AND ${RunStatusKey.name} = 'PAUSED'`,
  COMPLETED: `ExecutionStatus = 'Completed'`,
  FAILED: `ExecutionStatus = 'Failed'`,
  CANCELLED: `ExecutionStatus = 'Canceled'`,
  TERMINATED: `ExecutionStatus = 'Terminated'`,
  TIMED_OUT: `ExecutionStatus = 'TimedOut'`,
};
const EXEC_STATUS: Record<number, RunStatus> = { 1: 'RUNNING', 2: 'COMPLETED', 3: 'FAILED', 4: 'CANCELLED', 5: 'TERMINATED', 6: 'COMPLETED', 7: 'TIMED_OUT' };

/** A string literal of Temporal's visibility query language: backslashes and quotes escaped. */
export function visibilityString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** The visibility query for Capstan's runs, filtered. */
export function runsQuery(f: RunFilter): string {
  const clauses = [`(${RUN_WORKFLOW_TYPES.map((t) => `WorkflowType = ${visibilityString(t)}`).join(' OR ')})`];
  if (f.pipeline !== undefined) clauses.push(`${PipelineNameKey.name} = ${visibilityString(f.pipeline)}`);
  if (f.status) clauses.push(STATUS_QUERY[f.status]);
  return clauses.join(' AND ');
}

/**
 * A cursor names a position, not a page: the visibility page token its page was fetched with
 * (empty = from the start) and its index in that page. Temporal's page tokens are positional
 * (they encode the last row seen, not the page size), so fetching from the token and skipping
 * `index + 1` rows continues right after any edge.
 */
interface Cursor {
  token: string;
  index: number;
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify([c.token, c.index])).toString('base64url');
}

function decodeCursor(s: string): Cursor {
  try {
    const v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && typeof v[0] === 'string' && Number.isInteger(v[1]) && (v[1] as number) >= 0) return { token: v[0], index: v[1] as number };
  } catch {
    /* falls through */
  }
  throw new EngineError('BAD_ARGUMENT', 'after: not a cursor returned by runs (use an edge cursor or pageInfo.endCursor)');
}

/** One page of runs from Temporal visibility, newest first, starting after the cursor `after`. */
export async function listRuns(client: Client, namespace: string, f: RunFilter & { first: number; after?: string }): Promise<RunPage> {
  const query = runsQuery(f);
  const start = f.after !== undefined ? decodeCursor(f.after) : { token: '', index: -1 };
  const items: RunPage['items'] = [];
  let token = start.token;
  let skip = start.index + 1;
  let more = false;
  // Fetch until first + 1 rows are in hand (the extra one says whether there is a next page).
  for (;;) {
    const want = skip + f.first + 1 - items.length;
    const res = await client.workflowService.listWorkflowExecutions({
      namespace,
      pageSize: want,
      query,
      ...(token ? { nextPageToken: Buffer.from(token, 'base64url') } : {}),
    });
    const rows = res.executions ?? [];
    rows.forEach((e, i) => {
      if (i < skip) return;
      if (items.length === f.first) {
        more = true;
        return;
      }
      items.push({ run: listItem(e), cursor: encodeCursor({ token, index: i }) });
    });
    const next = res.nextPageToken?.length ? Buffer.from(res.nextPageToken).toString('base64url') : undefined;
    if (more || !next) break;
    token = next;
    skip = 0;
  }
  return { items, hasNextPage: more, hasPreviousPage: f.after !== undefined };
}

type Execution = NonNullable<Awaited<ReturnType<Client['workflowService']['listWorkflowExecutions']>>['executions']>[number];

function listItem(e: Execution): RunListItem {
  const sa = Object.fromEntries(Object.entries(e.searchAttributes?.indexedFields ?? {}).map(([k, p]) => [k, defaultPayloadConverter.fromPayload(p as never)]));
  let status = EXEC_STATUS[e.status ?? 1] ?? 'RUNNING';
  if (status === 'RUNNING' && sa[RunStatusKey.name] === 'PAUSED') status = 'PAUSED';
  return {
    id: e.execution?.workflowId ?? '',
    runId: e.execution?.runId ?? '',
    pipeline: String(sa[PipelineNameKey.name] ?? ''),
    status,
    startedAt: tsToIso(e.startTime) ?? '',
    ...(e.closeTime ? { closedAt: tsToIso(e.closeTime)! } : {}),
  };
}

function tsToIso(t: { seconds?: unknown; nanos?: number | null } | null | undefined): string | undefined {
  if (!t) return undefined;
  const ts = t as { seconds?: { toNumber?: () => number } | number | null; nanos?: number | null };
  const secs = typeof ts.seconds === 'number' ? ts.seconds : (ts.seconds?.toNumber?.() ?? Number(ts.seconds ?? 0));
  return new Date(secs * 1000 + Math.floor((ts.nanos ?? 0) / 1e6)).toISOString();
}
