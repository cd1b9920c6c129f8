import { execFileSync } from 'node:child_process';
import os from 'node:os';

/** One device a stage attempt can hold: a GPU (by its CUDA index or UUID) or a CPU "device" (a core, for a process). */
export interface Device {
  kind: 'gpu' | 'cpu';
  id: string;
}

/**
 * Parses `CAPSTAN_GPUS`: GPU ids separated by commas (`0,1`, or UUIDs), or `cpu:N` for N CPU
 * devices (a CPU-only host where each replica is a process). Throws on anything else.
 */
export function parseDevices(spec: string): Device[] {
  const s = spec.trim();
  const cpu = /^cpu:(\d+)$/i.exec(s);
  if (cpu) {
    const n = Number(cpu[1]);
    if (n < 1 || n > 64) throw new Error(`CAPSTAN_GPUS: cpu:N needs 1 ≤ N ≤ 64; got "${spec}"`);
    return Array.from({ length: n }, (_, i) => ({ kind: 'cpu' as const, id: String(i) }));
  }
  const ids = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (!ids.length) throw new Error(`CAPSTAN_GPUS: expected GPU ids like "0,1" or "cpu:N"; got "${spec}"`);
  for (const id of ids) if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(id)) throw new Error(`CAPSTAN_GPUS: bad GPU id ${JSON.stringify(id)}`);
  if (new Set(ids).size !== ids.length) throw new Error(`CAPSTAN_GPUS: GPU ids repeat in "${spec}"`);
  return ids.map((id) => ({ kind: 'gpu' as const, id }));
}

/** GPUs `nvidia-smi -L` lists (their indexes); none when the tool is absent or fails. */
export function detectGpus(run: (cmd: string, args: string[]) => string = defaultRun): string[] {
  try {
    const out = run('nvidia-smi', ['-L']);
    return out
      .split('\n')
      .map((l) => /^GPU (\d+):/.exec(l.trim())?.[1])
      .filter((x): x is string => x !== undefined);
  } catch {
    return [];
  }
}

function defaultRun(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
}

/**
 * The devices of this worker: `CAPSTAN_GPUS` when set, else the GPUs nvidia-smi finds, else
 * `fallbackCpu` CPU devices. The gpu queue's slots are this many.
 */
export function resolveDevices(gpusEnv: string | undefined, fallbackCpu: number, detect: () => string[] = detectGpus): Device[] {
  if (gpusEnv !== undefined && gpusEnv.trim() !== '') return parseDevices(gpusEnv);
  const found = detect();
  if (found.length) return found.map((id) => ({ kind: 'gpu' as const, id }));
  return Array.from({ length: Math.max(1, fallbackCpu) }, (_, i) => ({ kind: 'cpu' as const, id: String(i) }));
}

/** What an attempt holds: the device, the host it is on, and the environment its child process gets. */
export interface HeldDevice extends Device {
  host: string;
  /** `CUDA_VISIBLE_DEVICES=<id>` for a GPU; nothing for a CPU device. */
  env: Record<string, string>;
  /** `gpu:0` / `cpu:1`. */
  label: string;
}

/**
 * A worker's device pool. Each attempt of a gpu stage takes a free device and gives it back when
 * it ends (the worker's gpu slots equal the pool's size, so an attempt always finds one).
 * Devices are handed out lowest free first, never by replica index.
 */
export class DevicePool {
  private readonly free: Device[];
  private readonly waiters: ((d: Device) => void)[] = [];
  readonly size: number;
  constructor(
    readonly devices: Device[],
    readonly host: string = os.hostname(),
  ) {
    if (!devices.length) throw new Error('a device pool needs at least one device');
    this.free = [...devices];
    this.size = devices.length;
  }

  get available(): number {
    return this.free.length;
  }

  /** Takes a free device, waiting for one when all are held (aborted with the signal). */
  async take(signal?: AbortSignal): Promise<HeldDevice> {
    signal?.throwIfAborted();
    const d =
      this.free.shift() ??
      (await new Promise<Device>((resolve, reject) => {
        const w = (dev: Device) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(dev);
        };
        const onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal!.reason instanceof Error ? signal!.reason : new Error('aborted while waiting for a device'));
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(w);
      }));
    return { ...d, host: this.host, env: d.kind === 'gpu' ? { CUDA_VISIBLE_DEVICES: d.id } : {}, label: `${d.kind}:${d.id}` };
  }

  /** Gives a device back (to the longest waiter, else to the pool, in device order). */
  give(d: Device): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter({ kind: d.kind, id: d.id });
      return;
    }
    if (this.free.some((f) => f.kind === d.kind && f.id === d.id)) return;
    this.free.push({ kind: d.kind, id: d.id });
    const order = (x: Device) => this.devices.findIndex((y) => y.kind === x.kind && y.id === x.id);
    this.free.sort((a, b) => order(a) - order(b));
  }
}

export type WorkerRole = 'workflows' | 'cpu' | 'gpu';

/**
 * Which roles a worker serves and with which devices, decided once at start. A gpu role needs
 * devices: CAPSTAN_GPUS, or GPUs nvidia-smi lists. On a host with neither, an explicit gpu role
 * is refused (CAPSTAN_GPUS=cpu:N asks for N CPU "devices" explicitly), and the default roles
 * leave gpu out, saying so.
 */
export function placeRoles(o: { roles: WorkerRole[]; explicit: boolean; gpus?: Device[]; detect?: () => string[] }): {
  roles: WorkerRole[];
  gpus?: Device[];
  note?: string;
} {
  if (!o.roles.includes('gpu')) return { roles: o.roles };
  if (o.gpus?.length) return { roles: o.roles, gpus: o.gpus };
  const found = (o.detect ?? detectGpus)();
  if (found.length) return { roles: o.roles, gpus: found.map((id) => ({ kind: 'gpu' as const, id })) };
  if (o.explicit) {
    throw new Error(
      'refusing the gpu role: this host has no GPU (nvidia-smi -L lists none) and CAPSTAN_GPUS is not set. Set CAPSTAN_GPUS=cpu:N to run gpu stages here as N CPU processes, or leave gpu out of CAPSTAN_WORKER_ROLES.',
    );
  }
  return {
    roles: o.roles.filter((r) => r !== 'gpu'),
    note: 'not serving gpu stages: this host has no GPU (nvidia-smi -L lists none); CAPSTAN_GPUS=cpu:N serves them as N CPU processes',
  };
}
