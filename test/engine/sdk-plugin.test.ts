// A third-party plugin as a user writes it: its own folder outside the checkout, importing only
// from the package's public entry `capstan/plugin` (resolvable the way `npm link` makes it:
// node_modules/capstan → the checkout), loaded with the plugin loader and run in a pipeline
// started over GraphQL.
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StagePlugin } from '../../plugins/contract.js';
import { loadExternalPlugins } from '../../plugins/loader.js';
import { StageRegistry } from '../../plugins/registry.js';
import { writeNoteStage } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const checkout = path.resolve(import.meta.dirname, '../..');

const PLUGIN_SOURCE = `import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { defineStage, PLUGIN_API_VERSION, StageError, z } from 'capstan/plugin';

/** Counts the words of a note; refuses notes shorter than minWords. */
export default defineStage({
  name: 'acme:word-count',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'counts the words of a note',
  paramsSchema: z.object({ minWords: z.number().int().min(0).default(1) }),
  consumes: ['note'],
  produces: ['count'],
  resource: 'cpu',
  async run(ctx, params, inputs) {
    const text = await readFile(path.join(await ctx.localPath(inputs.note), 'note.txt'), 'utf8');
    const words = text.split(/\\s+/).filter(Boolean).length;
    if (words < params.minWords) throw new StageError(\`\${words} words, fewer than \${params.minWords}\`, { type: 'NOTE_TOO_SHORT' });
    const count = await ctx.output('count', (dir) => writeFile(path.join(dir, 'count.json'), JSON.stringify({ words })));
    return { outputs: { count }, metrics: { words } };
  },
});
`;

let dir: string;
let stack: TestStack;
let plugin: StagePlugin<any>;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'capstan-sdk-plugin-'));
  await mkdir(path.join(dir, 'node_modules'));
  await symlink(checkout, path.join(dir, 'node_modules', 'capstan'), 'dir');
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'acme-capstan-plugins', type: 'module', main: 'word-count.ts' }));
  await writeFile(path.join(dir, 'word-count.ts'), PLUGIN_SOURCE);
  const stages = new StageRegistry();
  expect(await loadExternalPlugins(stages, [dir], { cwd: os.tmpdir() })).toEqual(['acme:word-count@1.0.0']);
  plugin = stages.get('acme:word-count')!;
  stack = await startTestStack({ plugins: [writeNoteStage, plugin] });
});
afterAll(async () => {
  await stack?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const RUN_FIELDS = `id status stages { id status attempts outputs { kind uri } metrics error errorType }`;

async function runViaGraphql(spec: unknown) {
  const started = await stack.gql(`mutation($spec: PipelineSpecInput!) { startPipeline(spec: $spec) { id } }`, { spec });
  expect(started.errors).toBeUndefined();
  const id = started.data.startPipeline.id as string;
  return waitFor(async () => {
    const r = await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN_FIELDS} } }`, { id });
    const run = r.data?.run;
    return run && !['RUNNING', 'PAUSED'].includes(run.status) ? run : undefined;
  }, `run ${id} to close`);
}

describe('a plugin written against the SDK entry point, outside the source tree', () => {
  it('is under 40 lines with its params schema, and imports only from capstan/plugin', async () => {
    const source = await readFile(path.join(dir, 'word-count.ts'), 'utf8');
    expect(source.trimEnd().split('\n').length).toBeLessThan(40);
    const imports = [...source.matchAll(/from '([^']+)'/g)].map((m) => m[1]);
    expect(imports.filter((i) => !i!.startsWith('node:'))).toEqual(['capstan/plugin']);
    expect(plugin.paramsSchema.parse({})).toEqual({ minWords: 1 });
  });

  it('runs in a pipeline started over GraphQL', async () => {
    const done = await runViaGraphql({
      name: 'sdk-plugin',
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: 'a durable ml pipeline' } },
        { id: 'count', plugin: 'acme:word-count', params: { minWords: 2 } },
      ],
    });
    expect(done.status).toBe('COMPLETED');
    expect(done.stages[1]).toMatchObject({ id: 'count', status: 'SUCCEEDED', attempts: 1 });
    expect(done.stages[1].metrics).toMatchObject({ words: 4 });
    const out = done.stages[1].outputs[0];
    expect(out.kind).toBe('count');
    expect(JSON.parse(await readFile(path.join(stack.artifacts.resolve(out.uri), 'count.json'), 'utf8'))).toEqual({ words: 4 });
  });

  it('its StageError fails the stage without retries, under its own type', async () => {
    const done = await runViaGraphql({
      name: 'sdk-plugin-short',
      onFailure: { action: 'fail' },
      stages: [
        { id: 'write', plugin: 'test:write-note', params: { text: 'short' } },
        { id: 'count', plugin: 'acme:word-count', params: { minWords: 3 }, retry: { maximumAttempts: 3, initialInterval: '100ms' } },
      ],
    });
    expect(done.status).toBe('FAILED');
    expect(done.stages[1]).toMatchObject({ status: 'FAILED', attempts: 1, errorType: 'NOTE_TOO_SHORT' });
    expect(done.stages[1].error).toContain('1 words, fewer than 3');
  });
});
