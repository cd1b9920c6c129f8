// Issue 9, data paths: data sources are confined to the data roots. Over the real test stack
// (Temporal dev server, workers, GraphQL over HTTP): absolute paths outside the roots, `..`,
// a symlink inside a root that points outside, /dev/zero, /proc/self/environ and a FIFO are each
// refused — by spec validation where the path alone says so, by the worker before opening
// otherwise — with a code and a message naming the path and the rule; no byte of the files
// appears in any error, metric, event or field of the run; and a normal run completes afterwards
// on the same stack.
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { startTestStack, visibilityCaughtUp, waitFor, type TestStack } from '../helpers/stack.js';

const SECRET = 'capstan-secret-5b1e0c7d';
const RUN_FIELDS = `id pipeline status startedAt closedAt tfBackend pausedStages
  stages { id plugin status attempts outputs { kind uri sha256 bytes } metrics error errorType progress }
  events { seq type stageId message }`;

let stack: TestStack;
let tmp: string;
let root: string;
let outside: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-paths-'));
  root = path.join(tmp, 'data');
  outside = path.join(tmp, 'private');
  await mkdir(root);
  await mkdir(outside);
  // A file outside the roots whose every line carries the secret, numeric enough to parse.
  const secretCsv = [`${SECRET},label`, ...Array.from({ length: 20 }, (_, i) => `${i},${i % 2}`), `${SECRET},1`].join('\n');
  await writeFile(path.join(outside, 'secret.csv'), secretCsv);
  await symlink(path.join(outside, 'secret.csv'), path.join(root, 'escape.csv'));
  await symlink('/dev/zero', path.join(root, 'zero.csv'));
  execFileSync('mkfifo', [path.join(root, 'pipe.csv')]);
  // The same secret file copied inside the root: readable, but never echoed in errors either.
  await copyFile(path.join(outside, 'secret.csv'), path.join(root, 'copied.csv'));
  const rows = ['f1,f2,label'];
  for (let i = 0; i < 60; i++) rows.push(`${i},${(i * 7) % 13},${i % 3}`);
  await writeFile(path.join(root, 'ok.csv'), rows.join('\n'));
  stack = await startTestStack({ plugins: [dataPrepStage({ dataRoots: [root] })] });
});
afterAll(async () => {
  await stack?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function spec(name: string, source: Record<string, unknown>) {
  return {
    name,
    onFailure: { action: 'fail' },
    stages: [{ id: 'data', plugin: 'core:data-prep', params: { source, validationFraction: 0.2 } }],
  };
}

async function start(name: string, source: Record<string, unknown>) {
  return stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id status } }`, { spec: spec(name, source) });
}

async function closedRun(id: string) {
  return waitFor(async () => {
    const r = await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN_FIELDS} } }`, { id });
    const run = r.data?.run;
    return run && !['RUNNING', 'PAUSED'].includes(run.status) ? run : undefined;
  }, `run ${id} to close`);
}

describe('data paths are confined to the data roots (real stack)', () => {
  it('refuses absolute paths outside the roots, "..", /dev/zero and /proc/self/environ at spec validation, naming path and rule; nothing starts', async () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
      ['abs', { format: 'csv', path: path.join(outside, 'secret.csv'), labelColumn: 'label' }, 'source.path', 'absolute paths must lie inside a data root'],
      ['dotdot', { format: 'csv', path: '../private/secret.csv', labelColumn: 'label' }, 'source.path', '".." segments are not allowed in data paths'],
      [
        'dotdot-test',
        { format: 'csv', path: 'ok.csv', testPath: 'x/../../private/secret.csv', labelColumn: 'label' },
        'source.testPath',
        '".." segments are not allowed',
      ],
      ['dev-zero', { format: 'csv', path: '/dev/zero', labelColumn: 'label' }, 'source.path', 'is in /proc, /sys or /dev, which never hold data files'],
      ['proc-environ', { format: 'idx', images: '/proc/self/environ', labels: 'ok.csv' }, 'source.images', 'is in /proc, /sys or /dev'],
      ['passwd', { format: 'csv', path: '/etc/passwd', labelColumn: 'zz' }, 'source.path', 'absolute paths must lie inside a data root'],
    ];
    for (const [name, source, field, rule] of cases) {
      const r = await start(`paths-${name}`, source);
      expect(r.data, name).toBeNull();
      const err = r.errors![0]!;
      expect(err.extensions.code).toBe('SPEC_INVALID');
      const issue = (err.extensions.issues as { path: string; message: string; code: string }[]).find((i) => i.path === `stages[0].params.${field}`);
      const userPath = (source as Record<string, string>)[field.split('.')[1]!]!;
      expect(issue, `${name}: ${JSON.stringify(err)}`).toMatchObject({
        code: 'PLUGIN_PARAMS_INVALID',
        message: expect.stringContaining(`data path ${JSON.stringify(userPath)} is refused: `),
      });
      expect(issue!.message).toContain(rule);
      expect(err.message).toContain(`stages[0].params.${field}`);
      expect(JSON.stringify(r)).not.toContain(SECRET);
      expect(JSON.stringify(r)).not.toMatch(/root:x:0:0/);
    }
    // validatePipeline says the same without starting anything.
    const v = await stack.gql(`query($s: PipelineSpecInput!) { validatePipeline(spec: $s) { valid issues { path code message } } }`, {
      s: spec('paths-validate', { format: 'csv', path: '/proc/self/environ', labelColumn: 'label' }),
    });
    expect(v.data.validatePipeline.valid).toBe(false);
    expect(v.data.validatePipeline.issues[0]).toMatchObject({ path: 'stages[0].params.source.path', code: 'PLUGIN_PARAMS_INVALID' });
    await visibilityCaughtUp(stack.client); // visibility is eventually consistent
    const count = await stack.client.workflow.count(`CapstanPipeline STARTS_WITH 'paths-'`);
    expect(count.count).toBe(0);
  });

  it('refuses in the worker what the path alone does not show: a symlink escaping the root, a FIFO, a symlink to /dev/zero — non-retryable, no content leaked', async () => {
    const cases: [string, string, string, string][] = [
      ['symlink', 'escape.csv', 'symlink-escape', 'it resolves, through a symlink, to a location outside the data roots'],
      ['fifo', 'pipe.csv', 'not-regular-file', 'it is a FIFO (named pipe), not a regular file'],
      ['zero-link', 'zero.csv', 'virtual-filesystem', 'it resolves into /proc, /sys or /dev, which never hold data files'],
    ];
    const started = [];
    for (const [name, p] of cases) {
      const r = await start(`paths-${name}`, { format: 'csv', path: p, labelColumn: 'label' });
      expect(r.errors, name).toBeUndefined();
      started.push(r.data.startPipeline.id as string);
    }
    for (const [i, [name, p, , why]] of cases.entries()) {
      const run = await closedRun(started[i]!);
      expect(run.status, name).toBe('FAILED');
      const stage = run.stages[0];
      expect(stage).toMatchObject({ status: 'FAILED', attempts: 1, errorType: 'DATA_PATH_REFUSED' });
      expect(stage.error).toContain(`data path ${JSON.stringify(p)} is refused: ${why}`);
      expect(stage.outputs).toEqual([]);
      const all = JSON.stringify(run);
      expect(all).not.toContain(SECRET);
      expect(all).not.toContain(path.join(outside, 'secret.csv'));
    }
  });

  it('a file inside the roots that is not what the spec says fails naming line and columns, never echoing its text', async () => {
    const r = await start('paths-copied', { format: 'csv', path: 'copied.csv', labelColumn: 'zz' });
    const run = await closedRun(r.data.startPipeline.id);
    expect(run.status).toBe('FAILED');
    expect(run.stages[0]).toMatchObject({ errorType: 'DATA_MISMATCH', attempts: 1 });
    expect(run.stages[0].error).toContain(`${path.join(root, 'copied.csv')}: label column "zz" not found in the header (line 1, 2 columns)`);
    const bad = await start('paths-copied-2', { format: 'csv', path: 'copied.csv', labelColumn: 'label' });
    const run2 = await closedRun(bad.data.startPipeline.id);
    expect(run2.stages[0]).toMatchObject({ errorType: 'DATA_CORRUPT' });
    expect(run2.stages[0].error).toContain(`${path.join(root, 'copied.csv')}: line 22, column 1: not a finite number`);
    expect(JSON.stringify([run, run2])).not.toContain(SECRET);
  });

  it('the worker is still healthy: a normal data-prep run on the same stack completes', async () => {
    const r = await start('paths-ok', { format: 'csv', path: 'ok.csv', labelColumn: 'label' });
    expect(r.errors).toBeUndefined();
    const run = await closedRun(r.data.startPipeline.id);
    expect(run.status).toBe('COMPLETED');
    expect(run.stages[0]).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(run.stages[0].metrics).toMatchObject({ source: 'csv', trainCount: 48, validationCount: 12, numClasses: 3, features: 2 });
  });
});
