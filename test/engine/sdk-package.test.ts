// The package as a plugin author gets it: `npm pack` (its prepack compiles `capstan/plugin` to
// dist/sdk), the tarball installed into a project of its own, a plugin in TypeScript type-checked
// and compiled with plain `tsc`, run with plain `node` (no tsx), then loaded by the checkout's
// loader the way the worker loads it (node --import tsx), from its own copies of zod and of the SDK.
//
// The install: npm unpacks the tarball into node_modules/capstan, and zod (the one dependency
// `capstan/plugin` imports; scripts/build-sdk.mjs refuses any other) comes from the npm cache as
// its own copy. The engine's other dependencies (Temporal, TensorFlow.js, AWS SDK: 330 packages,
// ~700 MB, 40 s to minutes here) are left out: nothing the plugin runs or type-checks needs them.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const checkout = path.resolve(import.meta.dirname, '../..');
const tscBin = path.join(checkout, 'node_modules/typescript/bin/tsc');
const url = (p: string) => pathToFileURL(path.join(checkout, p)).href;

const execFileAsync = promisify(execFile);
/** Runs a command; a failure carries its output (tsc reports on stdout). */
async function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<{ stdout: string }> {
  try {
    return await execFileAsync(cmd, args, { ...opts, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  } catch (e) {
    const { stdout, stderr } = e as { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

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
    // @ts-expect-error plugin API 1's artifact store is gone: the types say so
    void ctx.artifacts;
    const text = await readFile(path.join(await ctx.localPath(inputs.note), 'note.txt'), 'utf8');
    const words = text.split(/\\s+/).filter(Boolean).length;
    if (words < params.minWords) throw new StageError(\`\${words} words, fewer than \${params.minWords}\`, { type: 'NOTE_TOO_SHORT' });
    const count = await ctx.output('count', async (dir) => {
      await writeFile(path.join(dir, 'count.json'), JSON.stringify({ words }));
      return { words };
    });
    return { outputs: { count }, metrics: { words } };
  },
});
`;

// Plain node: the compiled plugin with a minimal context (ctx.output into a temp folder).
const RUN_SCRIPT = `import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as sdk from 'capstan/plugin';
import plugin from './dist/word-count.js';

const work = process.argv[2];
await mkdir(path.join(work, 'note'), { recursive: true });
await writeFile(path.join(work, 'note', 'note.txt'), 'a durable ml pipeline');
const ctx = {
  runId: 'r1', pipeline: 'p', stageId: 'count', attempt: 1, lastCheckpoint: undefined,
  logger: { debug() {}, info() {}, warn() {}, error() {} }, signal: new AbortController().signal,
  services: {}, meter: { add() {} }, heartbeat() {},
  async localPath() { return path.join(work, 'note'); },
  async output(kind, write) {
    const dir = path.join(work, 'out', kind);
    await mkdir(dir, { recursive: true });
    const meta = await write(dir);
    return { kind, uri: 'artifact:out/' + kind, sha256: '0', bytes: 0, ...(meta ? { meta } : {}) };
  },
  async checkpointDir() { return path.join(work, 'checkpoints'); },
  checkpointUri(p) { return 'checkpoint:' + p; },
};
const inputs = { note: { kind: 'note', uri: 'artifact:note', sha256: '0', bytes: 21 } };
const result = await plugin.run(ctx, plugin.paramsSchema.parse({ minWords: 2 }), inputs);
const error = await plugin.run(ctx, plugin.paramsSchema.parse({ minWords: 9 }), inputs).catch((e) => e);
process.stdout.write(JSON.stringify({
  execArgv: process.execArgv,
  sdk: import.meta.resolve('capstan/plugin'),
  zod: import.meta.resolve('zod'),
  sdkApiVersion: sdk.PLUGIN_API_VERSION,
  plugin: { name: plugin.name, version: plugin.version, apiVersion: plugin.apiVersion, consumes: plugin.consumes, produces: plugin.produces, resource: plugin.resource, defaults: plugin.paramsSchema.parse({}) },
  result,
  error: { name: error.name, type: error.type, retryable: error.retryable, message: error.message, isSdkStageError: error instanceof sdk.StageError },
}));
`;

// The checkout's registry and loader, under tsx as the worker runs them.
const LOAD_SCRIPT = `import os from 'node:os';
const { StageRegistry } = await import(${JSON.stringify(url('plugins/registry.ts'))});
const { loadExternalPlugins } = await import(${JSON.stringify(url('plugins/loader.ts'))});
const { StageError } = await import(${JSON.stringify(url('lib/errors.ts'))});
const stages = new StageRegistry();
const loaded = await loadExternalPlugins(stages, [process.argv[2]], { cwd: os.tmpdir() });
const plugin = stages.get('acme:word-count');
const ctx = { async localPath() { return process.argv[3]; } };
const error = await plugin.run(ctx, plugin.paramsSchema.parse({ minWords: 99 }), { note: {} }).catch((e) => e);
process.stdout.write(JSON.stringify({ loaded, info: stages.list()[0], hostStageError: error instanceof StageError, type: error.type }));
`;

let tmp: string;
let project: string;
let tarball: string;
let hadDist: boolean;

/** The environment of a child that must run as plain node: nothing of vitest's or tsx's loaders. */
function plainEnv(): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _, ...env } = process.env;
  return env;
}

beforeAll(async () => {
  hadDist = existsSync(path.join(checkout, 'dist/sdk'));
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-sdk-package-'));
  await run('npm', ['pack', '--pack-destination', tmp], { cwd: checkout, env: plainEnv() });
  tarball = path.join(tmp, (await readdir(tmp)).find((f) => f.endsWith('.tgz'))!);

  project = path.join(tmp, 'acme-plugins');
  await mkdir(path.join(project, 'src'), { recursive: true });
  const host = JSON.parse(await readFile(path.join(checkout, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  await writeFile(
    path.join(project, 'package.json'),
    JSON.stringify(
      { name: 'acme-capstan-plugins', private: true, type: 'module', main: 'dist/word-count.js', dependencies: { zod: host.dependencies.zod } },
      null,
      2,
    ),
  );
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--no-package-lock'], { cwd: project, env: plainEnv() });
  await mkdir(path.join(project, 'node_modules/capstan'));
  await run('tar', ['-xzf', tarball, '-C', path.join(project, 'node_modules/capstan'), '--strip-components=1'], { cwd: tmp });
  // A plugin project's own dev dependency: Node's types.
  await mkdir(path.join(project, 'node_modules/@types'));
  await symlink(path.join(checkout, 'node_modules/@types/node'), path.join(project, 'node_modules/@types/node'), 'dir');

  await writeFile(path.join(project, 'src/word-count.ts'), PLUGIN_SOURCE);
  await writeFile(
    path.join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noUncheckedIndexedAccess: true,
        // Checks the package's declarations too: they must stand on zod and Node's types alone.
        skipLibCheck: false,
        types: ['node'],
        rootDir: 'src',
        outDir: 'dist',
      },
      include: ['src'],
    }),
  );
  await writeFile(path.join(project, 'run.mjs'), RUN_SCRIPT);
  await writeFile(path.join(tmp, 'load.mjs'), LOAD_SCRIPT);
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
  if (!hadDist) {
    await rm(path.join(checkout, 'dist/sdk'), { recursive: true, force: true });
    await rmdir(path.join(checkout, 'dist')).catch(() => undefined); // only when nothing else is in it
  }
});

describe('the capstan package, packed and installed into a plugin project of its own', () => {
  it('holds the compiled SDK with type declarations, the contract docs, and nothing else of the checkout', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball], { cwd: tmp });
    const files = stdout
      .trim()
      .split('\n')
      .map((f) => f.replace(/^package\//, ''));
    expect(files).toEqual(
      expect.arrayContaining([
        'package.json',
        'README.md',
        'docs/plugin-contract.md',
        'docs/stage-protocol.md',
        'dist/sdk/plugins/sdk.js',
        'dist/sdk/plugins/sdk.d.ts',
        'dist/sdk/plugins/contract.d.ts',
      ]),
    );
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    // scripts/setup-native.mjs: the package's postinstall (a no-op without a native build).
    expect(files.filter((f) => !/^(dist\/sdk\/|docs\/|README\.md$|package\.json$|scripts\/setup-native\.mjs$)/.test(f))).toEqual([]);
    const pkg = JSON.parse(await readFile(path.join(project, 'node_modules/capstan/package.json'), 'utf8'));
    expect(pkg.exports['./plugin']).toMatchObject({ types: './dist/sdk/plugins/sdk.d.ts', default: './dist/sdk/plugins/sdk.js' });
  });

  it('type-checks and compiles a TypeScript plugin with plain tsc', async () => {
    await run(process.execPath, [tscBin, '-p', project], { cwd: project, env: plainEnv() });
    expect(existsSync(path.join(project, 'dist/word-count.js'))).toBe(true);
  });

  it('runs the compiled plugin with plain node, from the compiled SDK and its own zod', async () => {
    const work = path.join(tmp, 'work');
    const { stdout } = await run(process.execPath, ['run.mjs', work], { cwd: project, env: plainEnv() });
    const out = JSON.parse(stdout);
    expect(out.execArgv).toEqual([]);
    expect(out.sdk).toBe(pathToFileURL(path.join(project, 'node_modules/capstan/dist/sdk/plugins/sdk.js')).href);
    expect(out.zod.startsWith(pathToFileURL(path.join(project, 'node_modules/zod/')).href)).toBe(true);
    expect(out.sdkApiVersion).toBe(2);
    expect(out.plugin).toEqual({
      name: 'acme:word-count',
      version: '1.0.0',
      apiVersion: 2,
      consumes: ['note'],
      produces: ['count'],
      resource: 'cpu',
      defaults: { minWords: 1 },
    });
    expect(out.result).toEqual({
      outputs: { count: { kind: 'count', uri: 'artifact:out/count', sha256: '0', bytes: 0, meta: { words: 4 } } },
      metrics: { words: 4 },
    });
    expect(JSON.parse(await readFile(path.join(work, 'out/count/count.json'), 'utf8'))).toEqual({ words: 4 });
    expect(out.error).toEqual({ name: 'StageError', type: 'NOTE_TOO_SHORT', retryable: false, message: '4 words, fewer than 9', isSdkStageError: true });
  });

  it("is accepted by the checkout's loader: its zod schema and its StageError are the host's kind", async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', path.join(tmp, 'load.mjs'), project, path.join(tmp, 'work/note')], {
      cwd: checkout,
      env: plainEnv(),
    });
    const out = JSON.parse(stdout);
    expect(out.loaded).toEqual(['acme:word-count@1.0.0']);
    expect(out.info).toMatchObject({ name: 'acme:word-count', consumes: ['note'], produces: ['count'], source: path.join(project, 'dist/word-count.js') });
    expect(out.info.paramsJsonSchema).toMatchObject({ type: 'object', properties: { minWords: { type: 'integer', minimum: 0, default: 1 } } });
    expect(out).toMatchObject({ hostStageError: true, type: 'NOTE_TOO_SHORT' });
  });
});
