// Issue 20, errors for the caller's role: a non-admin never sees an absolute server path (nor a
// file's bytes) in an error — spec issues of validatePipeline, SPEC_INVALID errors of
// startPipeline, a stage's error, the run's events, the attempt history. Paths inside a data root
// read `<data root N>/…`, any other `<server path>`. An admin, who runs the server, sees the
// whole text. Over the real test stack (Temporal dev server, workers, GraphQL over HTTP).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redactForRole, redactServerPaths } from '../../api/errors.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const SECRET = 'capstan-secret-4e2a91';
let stack: TestStack;
let tmp: string;
let root: string;
let operator: string;
let viewer: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-redact-'));
  root = path.join(tmp, 'data');
  await mkdir(path.join(root, 'mnist'), { recursive: true });
  // A text file named as IDX: its first bytes are the secret.
  await writeFile(path.join(root, 'mnist', 'secret.idx'), `${SECRET}\n`);
  await writeFile(path.join(root, 'labels.idx'), Uint8Array.from([0, 0, 8, 1, 0, 0, 0, 1, 0]));
  stack = await startTestStack({ plugins: [dataPrepStage({ dataRoots: [root] })], env: { CAPSTAN_DATA_ROOTS: root } });
  operator = await stack.token('operator');
  viewer = await stack.token('viewer');
});
afterAll(async () => {
  await stack?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const spec = (name: string, source: Record<string, unknown>) => ({
  name,
  onFailure: { action: 'fail' },
  stages: [{ id: 'data', plugin: 'core:data-prep', params: { source } }],
});

/** Every absolute path of this machine a text could carry: the test's folders, the stack's data folder, /tmp, /etc. */
function expectNoServerPath(v: unknown): void {
  const text = JSON.stringify(v);
  for (const p of [tmp, stack.dataDir, os.tmpdir(), '/etc/passwd']) expect(text).not.toContain(p);
  expect(text).not.toContain(SECRET);
}

describe('redactServerPaths', () => {
  it('names paths inside a data root by the root, others as <server path>; leaves URLs, artifact URIs and fractions alone', () => {
    const roots = ['/srv/data', '/srv/data/mnist', '/opt/mnist-data'];
    expect(redactServerPaths('data file /srv/data/x/train.csv not found', roots)).toBe('data file <data root 1>/x/train.csv not found');
    expect(redactServerPaths('/srv/data/mnist/t10k: bad magic number', roots)).toBe('<data root 2>/t10k: bad magic number');
    expect(
      redactServerPaths(
        'data path "/etc/passwd" is refused: absolute paths must lie inside a data root (/srv/data, /opt/mnist-data; set CAPSTAN_DATA_ROOTS)',
        roots,
      ),
    ).toBe('data path "<server path>" is refused: absolute paths must lie inside a data root (<data root 1>, <data root 3>; set CAPSTAN_DATA_ROOTS)');
    expect(redactServerPaths('cannot open /home/ann/.data/admin-token.', roots)).toBe('cannot open <server path>.');
    expect(redactServerPaths("ENOENT: open '/srv/database/x'", roots)).toBe("ENOENT: open '<server path>'");
    const untouched = 'see http://127.0.0.1:8233/namespaces/default/workflows and artifact:runs/p_1/data/dataset; 3/4 done, 28×28 / 255';
    expect(redactServerPaths(untouched, roots)).toBe(untouched);
    expect(redactForRole('at /srv/data/a.csv', { role: 'admin' }, roots)).toBe('at /srv/data/a.csv');
    expect(redactForRole('at /srv/data/a.csv', { role: 'operator' }, roots)).toBe('at <data root 1>/a.csv');
    expect(redactForRole(null, { role: 'viewer' }, roots)).toBeNull();
  });
});

describe('errors by role (real stack)', () => {
  it('validatePipeline and startPipeline: spec issues name no server path for an operator; an admin sees the roots', async () => {
    const bad = spec('redact-abs', { format: 'csv', path: '/etc/passwd', labelColumn: 'label' });
    const validate = `query($s: PipelineSpecInput!) { validatePipeline(spec: $s) { valid issues { path code message } } }`;
    const asOperator = await stack.gql(validate, { s: bad }, operator);
    const issue = asOperator.data.validatePipeline.issues[0];
    expect(issue).toMatchObject({ path: 'stages[0].params.source.path', code: 'PLUGIN_PARAMS_INVALID' });
    expect(issue.message).toBe(
      'data path "<server path>" is refused: absolute paths must lie inside a data root (<data root 1>; set CAPSTAN_DATA_ROOTS to allow another folder)',
    );
    expectNoServerPath(asOperator);
    const asAdmin = await stack.gql(validate, { s: bad });
    expect(asAdmin.data.validatePipeline.issues[0].message).toBe(
      `data path "/etc/passwd" is refused: absolute paths must lie inside a data root (${root}; set CAPSTAN_DATA_ROOTS to allow another folder)`,
    );

    const start = `mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`;
    const refused = await stack.gql(start, { s: bad }, operator);
    expect(refused.data).toBeNull();
    expect(refused.errors![0]!.extensions.code).toBe('SPEC_INVALID');
    expect(refused.errors![0]!.message).toContain('stages[0].params.source.path: data path "<server path>" is refused');
    expect((refused.errors![0]!.extensions.issues as { message: string }[])[0]!.message).toBe(issue.message);
    expectNoServerPath(refused);
    const adminRefused = await stack.gql(start, { s: bad });
    expect(adminRefused.errors![0]!.message).toContain(root);
  });

  it('a failed stage: its error, the run events and the attempt history name the file by its data root for non-admins; IDX errors show no file bytes', async () => {
    const fields = `status stages { status errorType error attemptHistory { error } } events { type message }`;
    const runs: Record<string, string> = {};
    for (const [name, source] of [
      ['redact-missing', { format: 'csv', path: 'mnist/nope.csv', labelColumn: 'label' }],
      ['redact-idx', { format: 'idx', images: 'mnist/secret.idx', labels: 'labels.idx' }],
    ] as const) {
      const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec(name, source) }, operator);
      expect(r.errors, name).toBeUndefined();
      runs[name] = r.data.startPipeline.id;
    }
    const closed = async (id: string, token: string) =>
      waitFor(async () => {
        const r = await stack.gql(`query($id: ID!) { run(id: $id) { ${fields} } }`, { id }, token);
        return r.data?.run && r.data.run.status === 'FAILED' && r.data.run.stages[0].attemptHistory.length > 0 ? r : undefined;
      }, `run ${id} to fail`);

    const missing = await closed(runs['redact-missing']!, viewer);
    const stage = missing.data.run.stages[0];
    expect(stage).toMatchObject({ status: 'FAILED', errorType: 'DATA_NOT_FOUND' });
    expect(stage.error).toContain('data file <data root 1>/mnist/nope.csv not found');
    expect(stage.attemptHistory[0].error).toContain('data file <data root 1>/mnist/nope.csv not found');
    expect(missing.data.run.events.find((e: { type: string }) => e.type === 'STAGE_FAILED').message).toContain('<data root 1>/mnist/nope.csv');
    expectNoServerPath(missing);
    const missingAsAdmin = await closed(runs['redact-missing']!, stack.adminToken);
    expect(missingAsAdmin.data.run.stages[0].error).toContain(`data file ${path.join(root, 'mnist', 'nope.csv')} not found`);

    const idx = await closed(runs['redact-idx']!, operator);
    expect(idx.data.run.stages[0]).toMatchObject({ errorType: 'DATA_CORRUPT' });
    expect(idx.data.run.stages[0].error).toContain(
      '<data root 1>/mnist/secret.idx: not an IDX file: bad magic number (expected 0x00000803 (unsigned bytes, 3 dimensions))',
    );
    expectNoServerPath(idx);
    // Not even as hex: the first four bytes of the file.
    const hex = Buffer.from(SECRET.slice(0, 4)).toString('hex');
    expect(JSON.stringify(await closed(runs['redact-idx']!, stack.adminToken))).not.toContain(hex);
  });
});
