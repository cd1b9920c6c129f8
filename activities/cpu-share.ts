import { AsyncLocalStorage, createHook, type AsyncHook } from 'node:async_hooks';

/**
 * The worker's own CPU time, shared out between the attempts that run in it at the same time.
 *
 * Node has no per-thread or per-async-context CPU clock: the worker's CPU time
 * (`process.cpuUsage`) is one figure for the process. It is shared out interval by interval:
 * every time an attempt joins, leaves or reads its share, the CPU time the process used since the
 * last such moment goes to the attempts running then, except those whose work is measured by pid
 * as a whole (`wholeAttempt`: a command stage's process tree). So the worker's CPU is billed once
 * in total, not once per attempt.
 *
 * How it is split: while a single attempt runs in the worker it gets all of it. While two or more
 * do, async hooks time the main thread's callbacks per attempt (each attempt's plugin runs inside
 * its own async context, `run`), and the interval's CPU goes to them in proportion to that time;
 * what no attempt's callbacks account for (the SDK, the API, other threads) is split evenly. The
 * hooks cost every callback and promise a little, so they are on only while attempts overlap.
 * Time on the main thread stands for CPU time (work on other threads, e.g. a native backend's
 * thread pool, is spread by main-thread time); CPU-heavy work belongs in child processes (as the
 * built-in trainers do), whose CPU is measured by pid, exactly.
 *
 * One per process (the CPU clock is the process's), made on first use.
 */
export interface CpuShare {
  /** The share of the worker's CPU this attempt has been billed so far, in seconds. */
  seconds(): number;
  /** Stops sharing (the attempt ended); returns the final share in seconds. */
  leave(): number;
  /** Runs the attempt's work in its own async context, so its main-thread time is told apart. */
  run<T>(fn: () => Promise<T>): Promise<T>;
}

interface Member {
  /** CPU time billed so far, in microseconds. */
  micros: number;
  /** Main-thread time of the attempt's callbacks since the last settle, in milliseconds (while timed). */
  busyMs: number;
  /** True while the attempt's CPU is measured by pid as a whole: it takes no share of the worker's. */
  measuredByPid: () => boolean;
}

interface Sharing {
  last: NodeJS.CpuUsage;
  members: Set<Member>;
  /** Whether the main thread's time per attempt was timed during the whole current interval. */
  timed: boolean;
}

const context = new AsyncLocalStorage<Member>();
let sharing: Sharing | undefined;

// Main-thread time per attempt: on every callback's entry and exit, the time since the last
// switch goes to the attempt whose callback was running (exclusive time, so nested callbacks
// count once).
let hook: AsyncHook | undefined;
let owner: Member | undefined;
let since = 0;
const outer: (Member | undefined)[] = [];
const charge = () => {
  const now = performance.now();
  if (owner) owner.busyMs += now - since;
  since = now;
};

function timeCallbacks(on: boolean): void {
  if (on && !hook) {
    owner = undefined;
    outer.length = 0;
    since = performance.now();
    hook = createHook({
      before() {
        charge();
        outer.push(owner);
        owner = context.getStore();
      },
      after() {
        charge();
        owner = outer.pop();
      },
    }).enable();
  } else if (!on && hook) {
    hook.disable();
    hook = undefined;
    owner = undefined;
    outer.length = 0;
  }
}

/** Hands the CPU time used since the last settle to the attempts running now, and starts a new interval. */
function settle(s: Sharing): void {
  const now = process.cpuUsage();
  const used = now.user - s.last.user + (now.system - s.last.system);
  s.last = now;
  if (hook) charge();
  const sharers = [...s.members].filter((m) => !m.measuredByPid());
  if (used > 0 && sharers.length > 0) {
    const busyMicros = s.timed ? sharers.reduce((n, m) => n + m.busyMs * 1000, 0) : 0;
    // Main-thread time stands for CPU time, up to what the process used; the rest is shared evenly.
    const timed = Math.min(used, busyMicros);
    for (const m of sharers) m.micros += (busyMicros > 0 ? (timed * m.busyMs * 1000) / busyMicros : 0) + (used - timed) / sharers.length;
  }
  for (const m of s.members) m.busyMs = 0;
  // Timed only while attempts that share the worker's CPU overlap.
  timeCallbacks(sharers.length >= 2);
  s.timed = hook !== undefined;
}

/** Joins the worker's CPU sharing for one attempt, from now on. */
export function shareWorkerCpu(measuredByPid: () => boolean): CpuShare {
  sharing ??= { last: process.cpuUsage(), members: new Set(), timed: false };
  const s = sharing;
  const me: Member = { micros: 0, busyMs: 0, measuredByPid };
  settle(s);
  s.members.add(me);
  settle(s);
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
        settle(s);
      }
      return me.micros / 1e6;
    },
    run: (fn) => context.run(me, fn),
  };
}
