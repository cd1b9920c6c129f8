// `npm start`: the whole stack on one host — Temporal dev server (with its Web UI), a worker and the
// GraphQL API — then the default pipeline on real MNIST, followed stage by stage. Ctrl-C stops all.
//
//   npm start                      # stack + default pipeline, stays up
//   npm start -- --exit-after-run  # stop once the pipeline has finished (exit 1 if it did not complete)
//   npm start -- --no-run          # just the stack
//   npm start -- --pipeline pipelines/other.yaml
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { detectGpus } from '../activities/devices.js';
import { ensureAdminToken, withTokenStore } from '../app/admin-token.js';
import { loadConfig } from '../app/config.js';
import { portInUse, startDevServer, stopLeftoverDevServer, type DevServer } from '../dev/dev-server.js';
import { ServerOwnedError } from '../dev/leftover-server.js';
import { createConsoleLogger } from '../lib/logger.js';
import { resolveWeed, startSeaweed, stopLeftoverSeaweed, type Seaweed } from '../dev/seaweed.js';
import { resolveTemporalCli } from '../dev/temporal-cli.js';
import { buildConsole } from './build-console.js';

const root = path.resolve(import.meta.dirname, '..');
const { values: flags } = parseArgs({
  options: {
    'exit-after-run': { type: 'boolean', default: false },
    'no-run': { type: 'boolean', default: false },
    pipeline: { type: 'string', default: 'pipelines/mnist-default.yaml' },
  },
  strict: true,
});
const config = loadConfig(process.env, process.cwd());
const logger = createConsoleLogger({ name: 'capstan', level: config.logLevel, format: config.telemetry.logFormat });
const children: { name: string; process: ChildProcess }[] = [];
let devServer: DevServer | undefined;
let seaweed: Seaweed | undefined;
let stopping = false;
/** The admin token the dev stack talks to its API with. */
let token: string | undefined;

async function main(): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const uiPort = Number(process.env.TEMPORAL_UI_PORT ?? 8233);
  const temporalPort = Number(process.env.TEMPORAL_PORT ?? 7233);
  let uiUrl: string | undefined;
  const dbFile = path.join(config.dataDir, 'temporal', 'dev.db');
  const ownSeaweed = config.artifacts.kind === 's3' && !config.artifacts.endpoint;
  // A server that an earlier stack on this data folder left behind (killed without its Ctrl-C path)
  // still holds our ports and the folder's database: stop it first, and say so. One that a stack
  // still running owns is left alone.
  try {
    if (!process.env.TEMPORAL_ADDRESS) await stopLeftoverDevServer({ dbFile, logger });
    if (ownSeaweed) await stopLeftoverSeaweed({ dir: path.join(config.dataDir, 'seaweedfs'), logger });
  } catch (e) {
    if (!(e instanceof ServerOwnedError)) throw e;
    logger.error(`${e.message}; nothing was started.`);
    return 2;
  }
  // Every port this stack will listen on must be free before anything starts: another process
  // there would answer our readiness probes and take our requests.
  const ports: [number, string, string][] = [
    ...(!process.env.TEMPORAL_ADDRESS
      ? ([
          [temporalPort, 'TEMPORAL_PORT', `or use the Temporal server already there with TEMPORAL_ADDRESS=127.0.0.1:${temporalPort}`],
          [uiPort, 'TEMPORAL_UI_PORT', ''],
        ] as [number, string, string][])
      : []),
    [config.api.port, 'CAPSTAN_API_PORT', ''],
  ];
  for (const [port, variable, hint] of ports) {
    if (await portInUse(config.api.host === '0.0.0.0' ? '0.0.0.0' : '127.0.0.1', port)) {
      logger.error(
        `port ${port} (${variable}) is already in use by another process; nothing was started. Stop that process, set ${variable} to a free port${hint ? `, ${hint}` : ''}.`,
      );
      return 2;
    }
  }
  if (!process.env.TEMPORAL_ADDRESS) {
    const cli = await resolveTemporalCli({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
    devServer = await startDevServer({
      cliPath: cli.path,
      dbFile,
      port: temporalPort,
      uiPort,
      logger,
    });
    env.TEMPORAL_ADDRESS = devServer.address;
    env.TEMPORAL_NAMESPACE = devServer.namespace;
    uiUrl = `http://localhost:${uiPort}`;
    env.CAPSTAN_TEMPORAL_UI_URL ??= uiUrl;
  } else {
    logger.info(`using the Temporal cluster at ${process.env.TEMPORAL_ADDRESS}`);
    uiUrl = process.env.CAPSTAN_TEMPORAL_UI_URL;
  }
  // CAPSTAN_ARTIFACTS=s3://… without an endpoint of its own: a SeaweedFS of the stack's own, under the data dir.
  let artifactsLine = `folder ${config.artifactsDir}`;
  if (config.artifacts.kind === 's3') {
    const a = config.artifacts;
    const where = `s3://${a.location.bucket}${a.location.prefix ? `/${a.location.prefix}` : ''}`;
    if (!a.endpoint) {
      const weed = resolveWeed({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
      seaweed = await startSeaweed({
        weedPath: weed.path,
        dir: path.join(config.dataDir, 'seaweedfs'),
        logger,
        ...(a.credentials ? { accessKeyId: a.credentials.accessKeyId, secretAccessKey: a.credentials.secretAccessKey } : {}),
      });
      Object.assign(env, seaweed.env(where.slice('s3://'.length)));
      artifactsLine = `${where} on SeaweedFS ${seaweed.endpoint} (data ${path.join(config.dataDir, 'seaweedfs')})`;
    } else artifactsLine = `${where} at ${a.endpoint}`;
  }
  const apiUrl = `http://${config.api.host === '0.0.0.0' ? 'localhost' : config.api.host}:${config.api.port}`;
  // The user's admin token: made on first start, kept in the data dir (mode 0600), reused after.
  const admin = config.api.auth === 'tokens' ? await withTokenStore(config, (t) => ensureAdminToken(t, config.api.adminTokenFile)) : undefined;
  token = admin?.token;
  // The console the API serves at /console (bundled here: nothing is fetched at run time).
  const built = await buildConsole();
  logger.info(`console built: ${(built.gzipBytes / 1024).toFixed(1)} kB gzipped`);
  // One host runs everything: without a GPU, the gpu stages run as CPU processes (asked for explicitly,
  // as a worker refuses the gpu role on a host without devices otherwise).
  if (!env.CAPSTAN_GPUS && config.workerRoles.includes('gpu') && !detectGpus().length) {
    env.CAPSTAN_GPUS = `cpu:${config.gpuSlots}`;
    logger.info(`no GPU here: the worker serves gpu stages on ${env.CAPSTAN_GPUS} (CAPSTAN_GPUS)`);
  }
  children.push({ name: 'worker', process: spawnPart('worker', ['worker.ts'], env) });
  children.push({ name: 'api', process: spawnPart('api', ['api/server.ts'], env) });
  await waitForHttp(`${apiUrl}/healthz`);
  const tokenFile = path.relative(process.cwd(), config.api.adminTokenFile) || config.api.adminTokenFile;
  const banner = [
    '',
    '  Capstan is up',
    `  GraphQL API + GraphiQL  ${apiUrl}/graphql`,
    `  Console                 ${apiUrl}/console`,
    ...(uiUrl ? [`  Temporal Web UI         ${uiUrl}`] : []),
    `  Data (artifacts, DBs)   ${config.dataDir}`,
    ...(config.artifacts.kind === 's3' ? [`  Artifacts               ${artifactsLine}`] : []),
    ...(admin
      ? [
          `  Admin token             ${tokenFile}${admin.created ? ' (new)' : ''}: paste it into GraphiQL or the console to sign in; scripts send`,
          `                          curl -H "Authorization: Bearer $(cat ${tokenFile})" …  (npm run token -- create makes more)`,
        ]
      : ['  Auth                    off (CAPSTAN_AUTH=off): every request on loopback acts as admin']),
    '  Ctrl-C stops everything.',
    '',
  ];
  process.stdout.write(`${banner.join('\n')}\n`);
  if (flags['no-run']) return new Promise<number>(() => {});

  const specPath = path.resolve(root, flags.pipeline);
  const started = await gql(apiUrl, `mutation($t: String!) { startPipelineFromText(text: $t) { id runId pipeline stages { id plugin } } }`, {
    t: readFileSync(specPath, 'utf8'),
  });
  const run = started.startPipelineFromText as { id: string; runId: string; pipeline: string; stages: { id: string; plugin: string }[] };
  process.stdout.write(`  started ${run.id}: ${run.stages.map((s) => s.id).join(' → ')}\n`);
  if (uiUrl)
    process.stdout.write(
      `  watch it: ${uiUrl}/namespaces/${env.TEMPORAL_NAMESPACE ?? 'default'}/workflows/${encodeURIComponent(run.id)}/${run.runId}/history\n\n`,
    );
  const final = await follow(apiUrl, run.id);
  if (flags['exit-after-run']) return final === 'COMPLETED' ? 0 : 1;
  process.stdout.write('\n  The stack stays up; Ctrl-C stops it.\n');
  return new Promise<number>(() => {});
}

/** Prints stage transitions and per-epoch progress until the run closes; returns the final status. */
async function follow(apiUrl: string, id: string): Promise<string> {
  const seen = new Map<string, string>();
  let lastProgress = '';
  for (;;) {
    const r = await gql(apiUrl, `query($id: ID!) { run(id: $id) { status tfBackend stages { id status attempts metrics progress error } } }`, { id });
    const run = r.run as {
      status: string;
      tfBackend?: string;
      stages: { id: string; status: string; attempts: number; metrics: Record<string, unknown>; progress?: unknown; error?: string }[];
    };
    for (const s of run.stages) {
      if (seen.get(s.id) !== s.status) {
        seen.set(s.id, s.status);
        const extra = s.status === 'SUCCEEDED' ? ` ${summarise(s.metrics)}` : s.error ? ` — ${s.error}` : '';
        process.stdout.write(`  ${new Date().toISOString().slice(11, 19)}  ${s.id.padEnd(14)} ${s.status}${extra}\n`);
      }
      if (s.status === 'RUNNING' && s.progress) {
        const p = JSON.stringify(s.progress);
        if (p !== lastProgress && p.length < 300) {
          lastProgress = p;
          process.stdout.write(`  ${' '.repeat(10)}${s.id.padEnd(14)} … ${p}\n`);
        }
      }
    }
    if (!['RUNNING', 'PAUSED'].includes(run.status) || (run.status === 'PAUSED' && flags['exit-after-run'])) {
      process.stdout.write(`\n  run ${id}: ${run.status}${run.tfBackend ? ` (tfjs backend: ${run.tfBackend})` : ''}\n`);
      return run.status;
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

function summarise(m: Record<string, unknown>): string {
  const keys = ['testAccuracy', 'sparsity', 'weightBytesAfter', 'samplesPerSecond', 'version', 'promoted', 'cost', 'revenue', 'roi', 'tfBackend'];
  const parts = keys.filter((k) => m[k] !== undefined).map((k) => `${k}=${typeof m[k] === 'number' ? Number((m[k] as number).toFixed(4)) : String(m[k])}`);
  return parts.length ? `(${parts.join(', ')})` : '';
}

function spawnPart(name: string, script: string[], env: NodeJS.ProcessEnv): ChildProcess {
  // capstan-source: a plugin that imports capstan/plugin through a linked checkout gets its sources (package.json exports).
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=capstan-source', ...script], {
    cwd: root,
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  child.once('exit', (code, signal) => {
    if (!stopping) {
      logger.error(`${name} exited (${signal ?? code}); stopping the stack`);
      void shutdown(1);
    }
  });
  return child;
}

async function waitForHttp(url: string, timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`API did not answer at ${url} within ${timeoutMs / 1000}s`);
}

async function gql(apiUrl: string, query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await fetch(`${apiUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await r.json()) as { data?: Record<string, unknown>; errors?: { message: string }[] };
  if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  return body.data!;
}

async function shutdown(code: number): Promise<never> {
  if (stopping) return new Promise<never>(() => {});
  stopping = true;
  // In order: the API (no new work comes in), then the worker (it drains: stages that finish
  // report their results to a server that is still up), then the Temporal server.
  logger.info(`stopping: api, then worker (draining), then temporal${seaweed ? ' and SeaweedFS' : ''}`);
  for (const name of ['api', 'worker']) {
    const c = children.find((x) => x.name === name)?.process;
    if (!c || c.exitCode !== null || c.signalCode !== null) continue;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => c.kill('SIGKILL'), name === 'worker' ? 60_000 : 15_000);
      c.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      c.kill('SIGTERM');
    });
  }
  await devServer?.stop();
  await seaweed?.stop();
  process.exit(code);
}

process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
main().then(
  (code) => shutdown(code),
  (e) => {
    logger.error(e instanceof Error ? e.message : String(e));
    void shutdown(1);
  },
);
