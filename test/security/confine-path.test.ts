import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StageError } from '../../lib/errors.js';
import { DATA_PATH_REFUSED, openConfined, pathProblem, readConfined } from '../../lib/confine-path.js';

const SECRET = 'capstan-secret-7f3a9c';
let tmp: string;
let root: string;
let outside: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-confine-'));
  root = path.join(tmp, 'root');
  outside = path.join(tmp, 'outside');
  await mkdir(path.join(root, 'sub'), { recursive: true });
  await mkdir(outside);
  await writeFile(path.join(root, 'ok.csv'), 'a,label\n1,0\n');
  await writeFile(path.join(outside, 'secret.csv'), `${SECRET},label\n1,0\n`);
  await symlink(path.join(outside, 'secret.csv'), path.join(root, 'escape.csv'));
  await symlink(path.join(root, 'ok.csv'), path.join(root, 'sub', 'inside-link.csv'));
  await symlink('/dev/zero', path.join(root, 'zero'));
  await symlink(outside, path.join(root, 'outdir'));
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  await symlink(root, path.join(tmp, 'root-link'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function refusal(p: string, opts: { roots?: string[]; maxBytes?: number } = {}): Promise<StageError> {
  const e = await openConfined(p, { roots: opts.roots ?? [root], ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}) }).then(
    async (f) => {
      await f.handle.close();
      throw new Error(`${p} was not refused`);
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(StageError);
  const s = e as StageError;
  expect(s.retryable).toBe(false);
  expect(s.message).not.toContain(SECRET);
  return s;
}

describe('pathProblem (lexical, for spec validation)', () => {
  it('refuses .., absolute paths outside the roots and /proc, /sys, /dev; accepts paths inside', () => {
    expect(pathProblem('ok.csv', { roots: [root] })).toBeUndefined();
    expect(pathProblem(path.join(root, 'sub/x.csv'), { roots: [root] })).toBeUndefined();
    expect(pathProblem('../outside/secret.csv', { roots: [root] })).toMatchObject({
      rule: 'dot-dot',
      message: 'data path "../outside/secret.csv" is refused: ".." segments are not allowed in data paths',
    });
    expect(pathProblem('sub/../ok.csv', { roots: [root] })?.rule).toBe('dot-dot');
    expect(pathProblem('/etc/passwd', { roots: [root] })).toMatchObject({
      rule: 'outside-roots',
      message: `data path "/etc/passwd" is refused: absolute paths must lie inside a data root (${root}; set CAPSTAN_DATA_ROOTS to allow another folder)`,
    });
    expect(pathProblem(`${root}-sibling/x.csv`, { roots: [root] })?.rule).toBe('outside-roots');
    expect(pathProblem('/dev/zero', { roots: [root] })?.rule).toBe('virtual-filesystem');
    expect(pathProblem('/proc/self/environ', { roots: ['/'] })).toMatchObject({
      rule: 'virtual-filesystem',
      message: expect.stringContaining('"/proc/self/environ" is refused'),
    });
    expect(pathProblem('x.csv', { roots: [] })?.rule).toBe('no-roots');
  });
});

describe('openConfined (before reading, in the worker)', () => {
  it('opens a regular file inside a root, relative paths against the first root, through symlinks that stay inside', async () => {
    for (const p of ['ok.csv', path.join(root, 'ok.csv'), 'sub/inside-link.csv', path.join(tmp, 'root-link', 'ok.csv')]) {
      const f = await openConfined(p, { roots: [root, path.join(tmp, 'root-link')] });
      expect(f.size).toBe(12);
      expect(f.realPath).toBe(path.join(root, 'ok.csv'));
      expect(new TextDecoder().decode(await readConfined(f))).toBe('a,label\n1,0\n');
    }
    expect(
      await openConfined('ok.csv', { roots: [path.join(tmp, 'root-link')] }).then(async (f) => {
        await f.handle.close();
        return f.path;
      }),
    ).toBe(path.join(tmp, 'root-link', 'ok.csv'));
  });

  it('refuses a symlink that escapes, naming the path and the rule, never the target or its content', async () => {
    for (const p of ['escape.csv', 'outdir/secret.csv']) {
      const e = await refusal(p);
      expect(e.type).toBe(DATA_PATH_REFUSED);
      expect(e.details).toEqual({ path: p, rule: 'symlink-escape' });
      expect(e.message).toBe(`data path ${JSON.stringify(p)} is refused: it resolves, through a symlink, to a location outside the data roots`);
      expect(e.message).not.toContain('outside/secret');
    }
  });

  it('refuses a FIFO without blocking, a directory, a device behind a symlink, /proc and an oversized file', async () => {
    const fifo = await refusal('fifo');
    expect(fifo.details).toEqual({ path: 'fifo', rule: 'not-regular-file' });
    expect(fifo.message).toBe('data path "fifo" is refused: it is a FIFO (named pipe), not a regular file');
    expect((await refusal('sub')).message).toContain('it is a directory, not a regular file');
    expect((await refusal('zero')).details).toEqual({ path: 'zero', rule: 'virtual-filesystem' });
    expect((await refusal('/dev/zero', { roots: ['/'] })).details).toEqual({ path: '/dev/zero', rule: 'virtual-filesystem' });
    expect((await refusal('/proc/self/environ', { roots: ['/'] })).details).toEqual({ path: '/proc/self/environ', rule: 'virtual-filesystem' });
    expect((await refusal('/etc/passwd')).details).toEqual({ path: '/etc/passwd', rule: 'outside-roots' });
    const big = await refusal('ok.csv', { maxBytes: 5 });
    expect(big.details).toEqual({ path: 'ok.csv', rule: 'too-large' });
    expect(big.message).toBe('data path "ok.csv" is refused: it is 12 bytes, over the limit of 5 bytes per data file');
  });

  it('a missing file inside the roots is DATA_NOT_FOUND; outside, it is refused without looking', async () => {
    const missing = await refusal('nope.csv');
    expect(missing.type).toBe('DATA_NOT_FOUND');
    expect(missing.message).toBe(`data file ${path.join(root, 'nope.csv')} not found`);
    expect((await refusal(path.join(outside, 'nope.csv'))).type).toBe(DATA_PATH_REFUSED);
  });
});

describe('openConfined against a racing swap (issue 20)', () => {
  it('a folder earlier in the path swapped for a symlink to outside, raced in a loop, never yields the outside file', async () => {
    // root/race/d is a folder with an inside file; outside/race holds a file of the same name
    // with the secret. A separate process swaps root/race/d between the folder and a symlink
    // to outside/race as fast as it can (rename, so every state is a real one), while this
    // process opens and reads "race/d/data.csv" over and over.
    const raceRoot = path.join(root, 'race');
    const outDir = path.join(outside, 'race');
    await mkdir(path.join(raceRoot, 'd'), { recursive: true });
    await mkdir(outDir, { recursive: true });
    await writeFile(path.join(raceRoot, 'd', 'data.csv'), 'inside,label\n1,0\n');
    await writeFile(path.join(outDir, 'data.csv'), `${SECRET},label\n1,0\n`);
    await symlink(outDir, path.join(raceRoot, 'link'));
    const swapper = spawn(
      process.execPath,
      [
        '-e',
        `const fs = require('node:fs');
         const [d, saved, link] = process.argv.slice(1);
         process.stdout.write('ready\\n');
         for (;;) { fs.renameSync(d, saved); fs.renameSync(link, d); fs.renameSync(d, link); fs.renameSync(saved, d); }`,
        path.join(raceRoot, 'd'),
        path.join(raceRoot, 'd-saved'),
        path.join(raceRoot, 'link'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const outcomes = { inside: 0, outside: 0, refused: 0, notFound: 0 };
    try {
      await new Promise<void>((resolve, reject) => {
        swapper.stdout!.once('data', () => resolve());
        swapper.once('exit', (code) => reject(new Error(`the swapper exited (${code})`)));
      });
      for (let i = 0; i < 4000; i++) {
        try {
          const text = new TextDecoder().decode(await readConfined(await openConfined('race/d/data.csv', { roots: [root] })));
          if (text.includes(SECRET)) outcomes.outside++;
          else outcomes.inside++;
        } catch (e) {
          expect(e).toBeInstanceOf(StageError);
          expect((e as StageError).message).not.toContain(SECRET);
          if ((e as StageError).type === 'DATA_NOT_FOUND') outcomes.notFound++;
          else outcomes.refused++;
        }
      }
    } finally {
      swapper.kill('SIGKILL');
    }
    // The race really ran: both states were met, and the outside file was never handed out.
    expect(outcomes.inside, JSON.stringify(outcomes)).toBeGreaterThan(0);
    expect(outcomes.refused, JSON.stringify(outcomes)).toBeGreaterThan(0);
    expect(outcomes.outside, JSON.stringify(outcomes)).toBe(0);
  });
});
