/**
 * The worker's own CPU time, shared out between the attempts that run in it at the same time.
 *
 * Node has no per-thread or per-async-context CPU clock, so the worker process's CPU time
 * (`process.cpuUsage`) cannot be split exactly between attempts running side by side on its one
 * main thread. It is split evenly, interval by interval: every time an attempt joins, leaves or
 * reads its share, the CPU time the process used since the last such moment is divided between
 * the attempts running then, except those whose work is measured by pid as a whole
 * (`wholeAttempt`: a command stage's process tree). So the worker's CPU is billed once in total,
 * not once per attempt. Two equally busy in-process attempts are each billed their own; an idle
 * one next to a busy one is billed part of the busy one's time. CPU-heavy work belongs in child
 * processes (as the built-in trainers do), whose CPU is measured by pid, exactly.
 *
 * One per process (the CPU clock is the process's), made on first use.
 */
export interface CpuShare {
  /** The share of the worker's CPU this attempt has been billed so far, in seconds. */
  seconds(): number;
  /** Stops sharing (the attempt ended); returns the final share in seconds. */
  leave(): number;
}

interface Member {
  micros: number;
  /** True while the attempt's CPU is measured by pid as a whole: it takes no share of the worker's. */
  measuredByPid: () => boolean;
}

interface Sharing {
  last: NodeJS.CpuUsage;
  members: Set<Member>;
}

let sharing: Sharing | undefined;

/** Hands the CPU time used since the last settle to the attempts running now. */
function settle(s: Sharing): void {
  const now = process.cpuUsage();
  const used = now.user - s.last.user + (now.system - s.last.system);
  s.last = now;
  const sharers = [...s.members].filter((m) => !m.measuredByPid());
  if (used <= 0 || sharers.length === 0) return;
  for (const m of sharers) m.micros += used / sharers.length;
}

/** Joins the worker's CPU sharing for one attempt, from now on. */
export function shareWorkerCpu(measuredByPid: () => boolean): CpuShare {
  sharing ??= { last: process.cpuUsage(), members: new Set() };
  const s = sharing;
  settle(s);
  const me: Member = { micros: 0, measuredByPid };
  s.members.add(me);
  let left = false;
  return {
    seconds() {
      if (!left) settle(s);
      return me.micros / 1e6;
    },
    leave() {
      if (!left) {
        settle(s);
        s.members.delete(me);
        left = true;
      }
      return me.micros / 1e6;
    },
  };
}
