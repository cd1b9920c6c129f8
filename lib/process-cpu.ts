import { readFile } from 'node:fs/promises';

/** USER_HZ: clock ticks per second in /proc/<pid>/stat on Linux. */
const TICKS = 100;

/**
 * CPU seconds (user + system) a process has used so far, its reaped children's included, read
 * from /proc/<pid>/stat. Undefined where there is no /proc (not Linux) or the process is gone.
 */
export async function processCpuSeconds(pid: number): Promise<number | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    // After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    return Number.isFinite(ticks) ? ticks / TICKS : undefined;
  } catch {
    return undefined;
  }
}
