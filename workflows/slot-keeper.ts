import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import {
  acquireSlotsSignal,
  registerSlotsSignal,
  releaseSlotsSignal,
  slotsDeniedSignal,
  slotsGrantedSignal,
  slotsPingSignal,
  slotsQuery,
  slotsRevokedSignal,
  unregisterSlotsSignal,
  type SlotKeeperView,
} from './gang.js';

interface Lease {
  worker: string;
  slots: number;
  expiresAt: number;
}
interface Ticket {
  requestId: string;
  workflowId: string;
  count: number;
  label?: string;
  since: number;
}

/** Everything the keeper knows; carried over continue-as-new. */
export interface SlotKeeperInput {
  queue: string;
  workers?: Lease[];
  holders?: Ticket[];
  waiting?: Ticket[];
  /** While a request waits, holders are checked this often (a run that was terminated never releases). Default 30 s. */
  holderCheckMs?: number;
  /** How long holders may hold more than the live capacity before the newest are revoked (from the workers' reports; default 60 s). */
  revokeAfterMs?: number;
  /** Since when holders have held more than the live capacity (epoch ms), carried over continue-as-new. */
  overSince?: number;
}

/**
 * Keepers from here on revoke holders that hold more than the live capacity for longer than the
 * grace period (newest first). Older keeper histories replay without revoking.
 */
const PATCH_SLOT_REVOKE = 'capstan-slot-revoke';

/** Continue as new well before Temporal's history warnings (10k events). */
const HISTORY_LIMIT = 4000;

/**
 * The slot keeper of one task queue (`capstan/slots/<queue>`, started by workers with
 * signalWithStart). Capacity = the slots the queue's live workers report (leases renewed by each
 * worker). Requests are served strictly first come, first served, each all at once: a request
 * waits at the head until that many slots are free, so concurrent runs take turns instead of
 * each holding part of what they need. A request larger than the whole capacity is refused.
 * When the live capacity falls below what holders hold (a worker died or left after the grant) for
 * longer than the grace period, the newest holders are revoked until the rest fit: a gang never
 * keeps slots no live worker has. The keeper ends itself when it has no workers, holders or
 * waiters left.
 */
export async function slotKeeperWorkflow(input: SlotKeeperInput): Promise<void> {
  const queue = input.queue;
  let workers: Lease[] = input.workers ?? [];
  let holders: Ticket[] = input.holders ?? [];
  let waiting: Ticket[] = input.waiting ?? [];
  const outbox: { kind: 'grant' | 'deny' | 'ping' | 'revoke'; t: Ticket; reason?: string }[] = [];
  const holderCheckMs = input.holderCheckMs ?? 30_000;
  let revokeAfterMs = input.revokeAfterMs ?? 60_000;
  let overSince = input.overSince;
  let lastCheck = Date.now();
  let dirty = true;

  const capacity = () => workers.reduce((n, w) => n + w.slots, 0);
  const used = () => holders.reduce((n, h) => n + h.count, 0);
  const iso = (ms: number) => new Date(ms).toISOString();

  /**
   * Holders hold more than the live workers have (a worker died or left after the grant): once
   * that has lasted `revokeAfterMs`, take the newest holders' slots back until the rest fit. Not
   * while no worker reports at all (a restart in progress: the holders' activities wait for workers
   * in Temporal's queue, and the clock starts when one reports less than is held).
   */
  const revokeOverCapacity = (now: number) => {
    const cap = capacity();
    if (cap === 0 || used() <= cap) {
      overSince = undefined;
      return;
    }
    overSince ??= now;
    if (now - overSince < revokeAfterMs) return;
    const held = used();
    // Newest first: the last granted is the likeliest to be the one no live worker can run.
    for (const h of [...holders].reverse()) {
      if (used() <= cap) break;
      holders = holders.filter((x) => x !== h);
      outbox.push({
        kind: 'revoke',
        t: h,
        reason: `task queue ${queue} has ${cap} live slot(s) but ${held} were held for ${Math.round((now - overSince) / 1000)} s; the newest holder's ${h.count} slot(s) were taken back`,
      });
    }
    overSince = undefined;
  };

  setHandler(registerSlotsSignal, (r) => {
    const lease = { worker: r.worker, slots: Math.max(0, Math.floor(r.slots)), expiresAt: Date.now() + r.ttlMs };
    workers = [...workers.filter((w) => w.worker !== r.worker), lease];
    revokeAfterMs = Math.max(1000, r.revokeAfterMs ?? r.ttlMs);
    dirty = true;
  });
  setHandler(unregisterSlotsSignal, ({ worker }) => {
    workers = workers.filter((w) => w.worker !== worker);
    dirty = true;
  });
  setHandler(acquireSlotsSignal, (r) => {
    const held = holders.find((h) => h.requestId === r.requestId);
    if (held) outbox.push({ kind: 'grant', t: held });
    else if (!waiting.some((w) => w.requestId === r.requestId)) {
      waiting.push({
        requestId: r.requestId,
        workflowId: r.workflowId,
        count: Math.max(1, Math.floor(r.count)),
        ...(r.label ? { label: r.label } : {}),
        since: Date.now(),
      });
    }
    dirty = true;
  });
  setHandler(releaseSlotsSignal, ({ requestId }) => {
    holders = holders.filter((h) => h.requestId !== requestId);
    waiting = waiting.filter((w) => w.requestId !== requestId);
    dirty = true;
  });
  setHandler(slotsQuery, (): SlotKeeperView => {
    const view = (t: Ticket) => ({
      requestId: t.requestId,
      workflowId: t.workflowId,
      count: t.count,
      ...(t.label ? { label: t.label } : {}),
      since: iso(t.since),
    });
    return {
      queue,
      capacity: capacity(),
      free: Math.max(0, capacity() - used()),
      workers: workers.map((w) => ({ worker: w.worker, slots: w.slots, expiresAt: iso(w.expiresAt) })),
      holders: holders.map(view),
      waiting: waiting.map(view),
    };
  });

  for (;;) {
    dirty = false;
    const now = Date.now();
    workers = workers.filter((w) => w.expiresAt > now);
    if (patched(PATCH_SLOT_REVOKE)) revokeOverCapacity(now);
    // Strict FIFO: only the head may be served, so a big gang is never starved by small ones.
    while (waiting.length) {
      const head = waiting[0]!;
      const cap = capacity();
      if (cap > 0 && head.count > cap) {
        waiting.shift();
        outbox.push({
          kind: 'deny',
          t: head,
          reason: `needs ${head.count} slots at once, but task queue ${queue} has ${cap} (slots of the workers serving it)`,
        });
        continue;
      }
      if (cap - used() < head.count) {
        // Someone waits: make sure every holder still exists (a terminated run never releases).
        if (now - lastCheck >= holderCheckMs && now - head.since >= holderCheckMs) {
          lastCheck = now;
          for (const h of holders) outbox.push({ kind: 'ping', t: h });
        }
        break;
      }
      waiting.shift();
      holders.push({ ...head, since: now });
      outbox.push({ kind: 'grant', t: head });
    }
    while (outbox.length) {
      const m = outbox.shift()!;
      try {
        const run = getExternalWorkflowHandle(m.t.workflowId);
        if (m.kind === 'grant') await run.signal(slotsGrantedSignal, { requestId: m.t.requestId });
        else if (m.kind === 'ping') await run.signal(slotsPingSignal, { requestId: m.t.requestId });
        else if (m.kind === 'revoke') await run.signal(slotsRevokedSignal, { requestId: m.t.requestId, reason: m.reason! });
        else await run.signal(slotsDeniedSignal, { requestId: m.t.requestId, reason: m.reason! });
      } catch (e) {
        if (isCancellation(e)) throw e;
        // The run is gone (finished, terminated): its slots are free again.
        holders = holders.filter((h) => h.requestId !== m.t.requestId);
        dirty = true;
      }
    }
    if (dirty) continue;
    if (!workers.length && !holders.length && !waiting.length) {
      await condition(allHandlersFinished);
      if (!dirty) return;
      continue;
    }
    const info = workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength > HISTORY_LIMIT) {
      await condition(allHandlersFinished);
      if (!dirty && !outbox.length)
        await continueAsNew<typeof slotKeeperWorkflow>({
          queue,
          workers,
          holders,
          waiting,
          holderCheckMs,
          revokeAfterMs,
          ...(overSince !== undefined ? { overSince } : {}),
        });
      continue;
    }
    const nextCheck = waiting.length && holders.length ? Math.max(lastCheck, waiting[0]!.since) + holderCheckMs : Infinity;
    const nextRevoke = overSince !== undefined ? overSince + revokeAfterMs : Infinity;
    const nextWake = Math.min(nextCheck, nextRevoke, ...workers.map((w) => w.expiresAt));
    const wait = Number.isFinite(nextWake) ? Math.max(1, nextWake - Date.now()) : undefined;
    if (wait === undefined) await condition(() => dirty);
    else await condition(() => dirty, wait);
  }
}
