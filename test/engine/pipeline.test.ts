import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, visibilityCaughtUp, waitFor, type TestStack } from '../helpers/stack.js';

const RUN_FIELDS = `id pipeline status startedAt closedAt tfBackend
  stages { id plugin status attempts startedAt closedAt outputs { kind uri sha256 bytes } metrics error errorType }`;

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins });
});
afterAll(async () => {
  await stack?.close();
});

async function startViaHttp(spec: unknown) {
  return stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { ${RUN_FIELDS} } }`, { spec });
}

async function waitClosed(id: string) {
  return waitFor(async () => {
    const r = await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN_FIELDS} } }`, { id });
    const run = r.data?.run;
    return run && !['RUNNING', 'PAUSED'].includes(run.status) ? run : undefined;
  }, `run ${id} to close`);
}

describe('pipeline engine on a real Temporal dev server', () => {
  it('runs a two-stage pipeline started through GraphQL over HTTP and leaves its artifacts on disk', async () => {
    const started = await startViaHttp({
      name: 'two-stage',
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: 'capstan' } },
        { id: 'shout', plugin: 'test:shout', params: { suffix: '!' } },
      ],
    });
    expect(started.errors).toBeUndefined();
    const run = started.data.startPipeline;
    expect(run.id).toMatch(/^pipeline\/two-stage\/[0-9a-z]{5}$/);
    expect(run.stages.map((s: any) => s.status)).toEqual(['PENDING', 'PENDING']);

    const done = await waitClosed(run.id);
    expect(done.status).toBe('COMPLETED');
    expect(done.stages.map((s: any) => [s.id, s.status, s.attempts])).toEqual([
      ['write', 'SUCCEEDED', 1],
      ['shout', 'SUCCEEDED', 1],
    ]);
    const out = done.stages[1].outputs[0];
    expect(out.kind).toBe('note');
    const text = await readFile(path.join(stack.artifacts.resolve(out.uri), 'note.txt'), 'utf8');
    expect(text).toBe('CAPSTAN!');
    expect(done.closedAt).toBeTruthy();
    // The same run from Temporal visibility, filtered by pipeline name and status.
    const listed = await waitFor(
      async () => {
        const r = await stack.gql(`{ runs(pipeline: "two-stage", status: COMPLETED) { edges { node { id status pipeline } } pageInfo { hasNextPage } } }`);
        return r.data.runs.edges.length ? r.data.runs : undefined;
      },
      'visibility to list the run',
      30_000,
    );
    expect(listed.edges[0].node).toEqual({ id: run.id, status: 'COMPLETED', pipeline: 'two-stage' });
  });

  it('retries a failing stage through Temporal until it succeeds', async () => {
    const { data } = await startViaHttp({
      name: 'flaky',
      stages: [
        { id: 'write', plugin: 'test:write-note' },
        { id: 'shout', plugin: 'test:shout', params: { failUntilAttempt: 2 }, retry: { maximumAttempts: 4, initialInterval: '100ms' } },
      ],
    });
    const done = await waitClosed(data.startPipeline.id);
    expect(done.status).toBe('COMPLETED');
    const shout = done.stages[1];
    expect(shout.attempts).toBe(3);
    expect(shout.metrics.attemptThatWorked).toBe(3);
  });

  it('fails the run with onFailure: fail and names the stage and the error; bad data is not retried', async () => {
    const { data } = await startViaHttp({
      name: 'bad-data',
      onFailure: { action: 'fail' },
      stages: [
        { id: 'write', plugin: 'test:write-note' },
        { id: 'shout', plugin: 'test:shout', params: { badData: true } },
      ],
    });
    const done = await waitClosed(data.startPipeline.id);
    expect(done.status).toBe('FAILED');
    expect(done.stages[1]).toMatchObject({ status: 'FAILED', attempts: 1, errorType: 'BAD_DATA' });
    expect(done.stages[1].error).toContain('note is not shoutable');
    expect(done.stages[0].status).toBe('SUCCEEDED');
  });

  it('rejects invalid specs with errors naming each path, and starts nothing', async () => {
    const cases: [unknown, string, string][] = [
      [{ name: 'v1', stages: [{ id: 'a', plugin: 'test:nope' }] }, 'stages[0].plugin', 'UNKNOWN_PLUGIN'],
      [
        {
          name: 'v1',
          stages: [
            { id: 'a', plugin: 'test:write-note' },
            { id: 'b', plugin: 'test:shout', params: { suffix: 'toolong' } },
          ],
        },
        'stages[1].params.suffix',
        'PLUGIN_PARAMS_INVALID',
      ],
      [
        {
          name: 'v1',
          stages: [
            { id: 'a', plugin: 'test:write-note' },
            { id: 'a', plugin: 'test:write-note' },
          ],
        },
        'stages[1].id',
        'DUPLICATE_STAGE_ID',
      ],
      [{ name: 'v1', stages: [{ id: 'a', plugin: 'test:shout' }] }, 'stages[0].plugin', 'MISSING_INPUT'],
      [{ name: 'v1', stages: [{ id: 'a', plugin: 'test:write-note', needs: ['zzz'] }] }, 'stages[0].needs[0]', 'UNKNOWN_DEPENDENCY'],
      [{ name: 'v1', stages: [{ id: 'a', plugin: 'test:write-note', params: { sleepMs: -1 } }] }, 'stages[0].params.sleepMs', 'PLUGIN_PARAMS_INVALID'],
    ];
    for (const [spec, p, code] of cases) {
      const r = await startViaHttp(spec);
      expect(r.data).toBeNull();
      expect(r.errors?.[0]?.extensions.code).toBe('SPEC_INVALID');
      expect(r.errors?.[0]?.message).toContain(p);
      expect(r.errors?.[0]?.extensions.issues).toContainEqual(expect.objectContaining({ path: p, code }));
    }
    const v = await stack.gql(`query($s: PipelineSpecInput!) { validatePipeline(spec: $s) { valid issues { path code } } }`, {
      s: { name: 'v1', stages: [{ id: 'a', plugin: 'test:nope' }] },
    });
    expect(v.data.validatePipeline).toEqual({ valid: false, issues: [{ path: 'stages[0].plugin', code: 'UNKNOWN_PLUGIN' }] });
    await visibilityCaughtUp(stack.client); // visibility is eventually consistent
    const count = await stack.client.workflow.count(`CapstanPipeline = 'v1'`);
    expect(count.count).toBe(0);
  });

  it('accepts a YAML spec and lists the stage plugins with their params JSON Schema', async () => {
    const r = await stack.gql(`mutation($t: String!) { startPipelineFromText(text: $t) { id pipeline } }`, {
      t: 'name: yaml-spec\nstages:\n  - id: write\n    plugin: test:write-note\n    params: { text: yaml }\n',
    });
    expect(r.errors).toBeUndefined();
    const done = await waitClosed(r.data.startPipelineFromText.id);
    expect(done.status).toBe('COMPLETED');
    const p = await stack.gql(`{ stagePlugins { name version consumes produces resource paramsSchema } }`);
    const shout = p.data.stagePlugins.find((x: any) => x.name === 'test:shout');
    expect(shout).toMatchObject({ version: '1.0.0', consumes: ['note'], produces: ['note'], resource: 'cpu' });
    expect(shout.paramsSchema.properties.suffix).toMatchObject({ type: 'string', maxLength: 5 });
  });

  it('pages through runs with a Relay cursor', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { data } = await startViaHttp({ name: 'paged', stages: [{ id: 'w', plugin: 'test:write-note' }] });
      ids.push(data.startPipeline.id);
    }
    // Page over closed runs: a run that closes while we page would move in the ordering.
    for (const id of ids) await waitClosed(id);
    await waitFor(
      async () => (await stack.client.workflow.count(`CapstanPipeline = 'paged' AND ExecutionStatus = 'Completed'`)).count === 3,
      'visibility',
      30_000,
    );
    const seen: string[] = [];
    let after: string | null = null;
    for (let page = 0; page < 5; page++) {
      const r: any = await stack.gql(
        `query($a: String) { runs(pipeline: "paged", first: 2, after: $a) { edges { node { id } } pageInfo { hasNextPage endCursor } } }`,
        { a: after },
      );
      seen.push(...r.data.runs.edges.map((e: any) => e.node.id));
      if (!r.data.runs.pageInfo.hasNextPage) break;
      after = r.data.runs.pageInfo.endCursor;
    }
    expect(seen.sort()).toEqual([...ids].sort());

    // Relay: every edge cursor works as `after`, and the page after it starts right behind it.
    const all: any = await stack.gql(
      `{ runs(pipeline: "paged", first: 3) { edges { cursor node { id } } pageInfo { hasPreviousPage startCursor endCursor hasNextPage } } }`,
    );
    const edges = all.data.runs.edges as { cursor: string; node: { id: string } }[];
    expect(edges.map((e) => e.node.id).sort()).toEqual([...ids].sort());
    expect(all.data.runs.pageInfo).toEqual({ hasPreviousPage: false, startCursor: edges[0]!.cursor, endCursor: edges[2]!.cursor, hasNextPage: false });
    for (let i = 0; i < edges.length; i++) {
      const r: any = await stack.gql(
        `query($a: String) { runs(pipeline: "paged", first: 5, after: $a) { edges { node { id } } pageInfo { hasPreviousPage hasNextPage } } }`,
        { a: edges[i]!.cursor },
      );
      expect(r.data.runs.edges.map((e: any) => e.node.id)).toEqual(edges.slice(i + 1).map((e) => e.node.id));
      expect(r.data.runs.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: false });
    }
    const bad: any = await stack.gql(`{ runs(first: 2, after: "not-a-cursor") { edges { cursor } } }`);
    expect(bad.errors[0].extensions.code).toBe('BAD_ARGUMENT');
  });
});
