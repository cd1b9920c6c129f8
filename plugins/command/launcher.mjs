// The launcher of a command stage (docs/stage-protocol.md §5). Plain JavaScript, run with the
// worker's own Node (no tsx), as the leader of a new process group:
//
//   node launcher.mjs <command> [args…]
//
// - starts the command in its own group: stdin empty, stdout/stderr and fd 3 (the stage's
//   message pipe) shared with the launcher's; fd 4 (this launcher's reports) is not passed on;
// - reports the CPU time of every process in the group on fd 4, once a second, as JSON lines
//   {"usage": {"cpuSeconds": n}}, and when the command has exited
//   {"exit": {"code": n|null, "signal": s|null, "cpuSeconds": n, "launcherCpuSeconds": n}}, where
//   cpuSeconds is the command tree's own (cutime + cstime of this process once it has reaped it);
// - ignores SIGTERM/SIGINT itself (the worker signals the whole group; the command decides);
// - when its stdin (a pipe from the worker) closes — the worker died — stops the group: SIGTERM,
//   then SIGKILL after CAPSTAN_STOP_GRACE_MS;
// - ends by SIGKILL to its own group, so nothing the command left behind outlives the attempt.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, writeSync } from 'node:fs';

const TICKS = 100; // USER_HZ: clock ticks per second in /proc/<pid>/stat on Linux
const argv = process.argv.slice(2);
const graceMs = Number(process.env.CAPSTAN_STOP_GRACE_MS ?? 10_000);
const env = { ...process.env };
delete env.CAPSTAN_STOP_GRACE_MS;

function report(o) {
  try {
    writeSync(4, `${JSON.stringify(o)}\n`);
  } catch {
    // the worker is gone; the stdin watch stops the group
  }
}

/** utime, stime, cutime, cstime (seconds) and the process group of one process, from /proc. */
function stat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    return { pgrp: Number(f[2]), self: (Number(f[11]) + Number(f[12])) / TICKS, children: (Number(f[13]) + Number(f[14])) / TICKS };
  } catch {
    return undefined;
  }
}

/** CPU seconds of the group's other processes so far (their own and their reaped children's). */
function groupCpu() {
  let total = 0;
  let names;
  try {
    names = readdirSync('/proc');
  } catch {
    return undefined;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const s = stat(name);
    if (s && s.pgrp === process.pid) total += s.self + s.children;
  }
  return total;
}

process.on('SIGTERM', () => {});
process.on('SIGINT', () => {});

if (argv.length === 0) {
  process.stderr.write('launcher: no command given\n');
  report({ exit: { code: 127, signal: null, cpuSeconds: 0, launcherCpuSeconds: 0, error: 'no command given' } });
  process.exit(127);
}

let lastSample = 0;
const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 1, 2, 3], env });
const sampler = setInterval(() => {
  const c = groupCpu();
  if (c !== undefined) {
    lastSample = Math.max(lastSample, c);
    report({ usage: { cpuSeconds: lastSample } });
  }
}, 1000);

let stopping = false;
function stopGroup() {
  if (stopping) return;
  stopping = true;
  try {
    process.kill(-process.pid, 'SIGTERM');
  } catch {}
  setTimeout(() => {
    try {
      process.kill(-process.pid, 'SIGKILL');
    } catch {}
  }, graceMs).unref();
}
// The worker holds the other end of stdin: end-of-file means it is gone.
process.stdin.on('end', stopGroup);
process.stdin.on('error', stopGroup);
process.stdin.resume();

child.once('error', (e) => {
  clearInterval(sampler);
  process.stderr.write(`launcher: cannot start ${JSON.stringify(argv[0])}: ${e.code ?? e.message}\n`);
  report({ exit: { code: 127, signal: null, cpuSeconds: 0, launcherCpuSeconds: 0, error: `cannot start ${argv[0]}: ${e.code ?? e.message}` } });
  process.exit(127);
});
child.once('exit', (code, signal) => {
  clearInterval(sampler);
  const me = stat(process.pid);
  const mine = process.cpuUsage();
  report({
    exit: {
      code,
      signal,
      cpuSeconds: Math.max(me?.children ?? 0, lastSample),
      launcherCpuSeconds: (mine.user + mine.system) / 1e6,
    },
  });
  try {
    process.kill(-process.pid, 'SIGKILL');
  } catch {
    process.exit(0);
  }
});
