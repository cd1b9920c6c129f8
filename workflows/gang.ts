// Gang scheduling: the messages between pipeline runs, workers and a task queue's slot keeper,
// and the pure helpers around them. Workflow-safe (no I/O); the engine and workers import it too.
import { defineQuery, defineSignal } from '@temporalio/workflow';

/** Workflow id of the slot keeper of one task queue (one keeper per queue and namespace). */
export function slotKeeperId(taskQueue: string): string {
  return `capstan/slots/${taskQueue}`;
}

/**
 * Which stages take their slots from the keeper: every data-parallel stage (its replicas must
 * run at the same time), and every stage on a gpu queue (`<prefix>-gpu`, app/config.ts), since
 * those compete for the same slots. Single-replica cpu stages take worker slots directly.
 */
export function takesGangSlots(stage: { replicas: number; taskQueue: string }): boolean {
  return stage.replicas > 1 || stage.taskQueue.endsWith('-gpu');
}

/** A worker reporting (or renewing) its slots on the keeper's queue; the report lapses after `ttlMs`. */
export interface SlotReport {
  worker: string;
  slots: number;
  ttlMs: number;
  /**
   * How long holders may hold more slots than the live workers have before the keeper revokes the
   * newest (CAPSTAN_SLOT_REVOKE_AFTER; default: the lease). The latest report's value counts.
   */
  revokeAfterMs?: number;
}
export const registerSlotsSignal = defineSignal<[SlotReport]>('capstanRegisterSlots');
export const unregisterSlotsSignal = defineSignal<[{ worker: string }]>('capstanUnregisterSlots');

/** A run asking for `count` slots at once. Idempotent per requestId (a repeat re-sends a grant). */
export interface SlotRequest {
  requestId: string;
  /** The asking run's workflow id: grants and refusals are signalled there. */
  workflowId: string;
  count: number;
  /** For people: pipeline / stage. */
  label?: string;
}
export const acquireSlotsSignal = defineSignal<[SlotRequest]>('capstanAcquireSlots');
/** Gives slots back (held), or withdraws a request still waiting. Unknown ids are ignored. */
export const releaseSlotsSignal = defineSignal<[{ requestId: string }]>('capstanReleaseSlots');

/** Keeper → run: the request's slots are reserved for it. */
export const slotsGrantedSignal = defineSignal<[{ requestId: string }]>('capstanSlotsGranted');
/** Keeper → run: the request can never be served (more slots than the queue has). */
export const slotsDeniedSignal = defineSignal<[{ requestId: string; reason: string }]>('capstanSlotsDenied');
/**
 * Keeper → holding run: live capacity fell below what holders hold, for longer than the grace
 * period, and this (the newest) holder's slots are taken back. The run stops the stage's replicas
 * and asks again (or pauses with the reason when it can no longer get them).
 */
export const slotsRevokedSignal = defineSignal<[{ requestId: string; reason: string }]>('capstanSlotsRevoked');
/** Keeper → holding run, while others wait: a signal that fails tells the keeper the run is gone (terminated, reset). */
export const slotsPingSignal = defineSignal<[{ requestId: string }]>('capstanSlotsPing');

export interface SlotKeeperView {
  queue: string;
  capacity: number;
  free: number;
  workers: { worker: string; slots: number; expiresAt: string }[];
  holders: { requestId: string; workflowId: string; count: number; label?: string; since: string }[];
  waiting: { requestId: string; workflowId: string; count: number; label?: string; since: string }[];
}
export const slotsQuery = defineQuery<SlotKeeperView>('capstanSlots');

/**
 * The validation hook: a data-parallel stage whose replicas exceed its queue's capacity (the
 * keeper's `capacity`, i.e. the slots of the live workers on that queue) can never run. Returns
 * one message per such stage, naming it; empty when all fit. `capacity(queue)` undefined = unknown
 * (no worker has reported yet): not refused here; the run waits for workers instead.
 */
export function checkGangCapacity(
  stages: { id: string; replicas: number; taskQueue: string }[],
  capacity: (taskQueue: string) => number | undefined,
): string[] {
  const errors: string[] = [];
  for (const s of stages) {
    if (!takesGangSlots(s)) continue;
    const cap = capacity(s.taskQueue);
    if (cap !== undefined && cap > 0 && s.replicas > cap) {
      errors.push(`stage ${s.id}: ${s.replicas} replicas need ${s.replicas} slots at once, but task queue ${s.taskQueue} has ${cap}`);
    }
  }
  return errors;
}
