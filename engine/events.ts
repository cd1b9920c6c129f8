import { EngineError } from './errors.js';
import type { RunView } from './read-model.js';

/** Replaces `{{event.a.b}}` in string params with the payload's value (whole-string placeholders keep the value's type). */
export function applyEventPayload(v: unknown, event: { type: string; payload: unknown }): unknown {
  const lookup = (p: string): unknown => {
    let cur: unknown = { event: { type: event.type, ...(event.payload && typeof event.payload === 'object' ? (event.payload as object) : {}) } };
    for (const k of p.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
    if (cur === undefined) throw new EngineError('EVENT_PAYLOAD_MISSING', `params refer to {{${p}}}, which the event payload does not have`);
    return cur;
  };
  if (typeof v === 'string') {
    const whole = /^\{\{\s*([\w.]+)\s*\}\}$/.exec(v);
    if (whole) return lookup(whole[1]!);
    return v.replace(/\{\{\s*([\w.]+)\s*\}\}/g, (_, p: string) => String(lookup(p)));
  }
  if (Array.isArray(v)) return v.map((x) => applyEventPayload(x, event));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, applyEventPayload(x, event)]));
  return v;
}

/** One item of a run's live stream. */
export interface RunStreamEvent {
  seq: number;
  at: string;
  type: string;
  stageId?: string | null;
  message?: string | null;
  attempt?: number;
  progress?: unknown;
  /** For STAGE_WAITING: the stage's wait as the stream saw it. */
  wait?: RunView['stages'][number]['wait'];
  runStatus: RunView['status'];
}

/**
 * Follows a run: the workflow's own events (stage lifecycle, pause/resume) plus what Temporal
 * shows of running activities (retries, heartbeat progress), until the run closes.
 */
export async function* followRun(
  first: RunView,
  read: () => Promise<RunView | undefined>,
  o: { pollMs: number; signal?: AbortSignal },
): AsyncGenerator<RunStreamEvent> {
  let lastSeq = 0;
  let seq = 0;
  const attempts = new Map<string, number>();
  const progress = new Map<string, string>();
  /** Stage id → the barrier wait last streamed (round and who is missing). */
  const barriers = new Map<string, string>();
  for (let run: RunView | undefined = first; run && !o.signal?.aborted; run = await read()) {
    for (const e of run.events.filter((x) => x.seq > lastSeq)) {
      lastSeq = e.seq;
      const wait = e.type === 'STAGE_WAITING' ? slotWaitOf(run, e.seq, e.stageId) : undefined;
      yield { ...e, seq: ++seq, ...(wait ? { wait } : {}), runStatus: run.status };
    }
    // Replicas at a round barrier: the run records no event for it (it lives in their heartbeats), so the stream says when it starts, changes and ends.
    for (const s of run.stages) {
      const w = s.wait?.reason === 'BARRIER' ? s.wait : undefined;
      const key = w ? `${w.round}:${(w.waitingForReplicas ?? []).join(',')}` : undefined;
      const before = barriers.get(s.id);
      if (key === before) continue;
      if (w && key) {
        barriers.set(s.id, key);
        yield { seq: ++seq, at: new Date().toISOString(), type: 'STAGE_WAITING', stageId: s.id, message: w.message, wait: w, runStatus: run.status };
      } else {
        barriers.delete(s.id);
        yield {
          seq: ++seq,
          at: new Date().toISOString(),
          type: 'STAGE_WAIT_ENDED',
          stageId: s.id,
          message: 'the replicas met at the barrier',
          runStatus: run.status,
        };
      }
    }
    for (const s of run.stages) {
      if (s.status !== 'RUNNING') continue;
      const att = s.currentAttempt ?? 1;
      if (att > (attempts.get(s.id) ?? 1)) {
        attempts.set(s.id, att);
        yield { seq: ++seq, at: new Date().toISOString(), type: 'STAGE_RETRIED', stageId: s.id, attempt: att, message: s.error ?? null, runStatus: run.status };
      }
      const p = s.progress === undefined ? undefined : JSON.stringify(s.progress);
      if (p !== undefined && p !== progress.get(s.id)) {
        progress.set(s.id, p);
        yield { seq: ++seq, at: new Date().toISOString(), type: 'STAGE_PROGRESS', stageId: s.id, attempt: att, progress: s.progress, runStatus: run.status };
      }
    }
    if (run.status !== 'RUNNING' && run.status !== 'PAUSED') {
      yield { seq: ++seq, at: run.closedAt ?? new Date().toISOString(), type: 'RUN_CLOSED', message: run.status, runStatus: run.status };
      return;
    }
    await sleep(o.pollMs, o.signal);
  }
}

/** The stage's current slot wait, for its latest STAGE_WAITING event only (an earlier one has ended). */
function slotWaitOf(run: RunView, seq: number, stageId: string | undefined): RunStreamEvent['wait'] {
  const wait = run.stages.find((s) => s.id === stageId)?.wait;
  if (wait?.reason !== 'SLOTS') return undefined;
  const later = run.events.some((x) => x.seq > seq && x.stageId === stageId && (x.type === 'STAGE_WAITING' || x.type === 'STAGE_WAIT_ENDED'));
  return later ? undefined : wait;
}

/** Resolves after ms, or at once when the signal aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}
