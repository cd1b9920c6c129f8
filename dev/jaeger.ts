// Jaeger (v2, one binary: an OpenTelemetry Collector with Jaeger's storage and query) for
// development and the tracing tests: resolved like the Temporal CLI, started on free ports of
// 127.0.0.1 with a minimal configuration, and read back through its query HTTP API.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../lib/logger.js';
import { freePort } from './dev-server.js';
import { commandOutput, lastLine } from './find-binary.js';

/** Pinned: the module path and version of Jaeger's binary (built through the Go module proxy). */
export const JAEGER_VERSION = 'v1.75.0';
export const JAEGER_GO_PACKAGE = 'github.com/jaegertracing/jaeger/cmd/jaeger';

export interface ResolvedJaeger {
  path: string;
  source: 'JAEGER_PATH' | 'tools-folder' | 'go-build';
}

/**
 * Finds or builds the `jaeger` binary, in this order: JAEGER_PATH, `.tools/jaeger/<version>/jaeger`,
 * a build through the Go module proxy into that place. `go install …@version` is refused for this
 * module (its go.mod has replace directives), so the build goes through a throwaway module:
 * `go mod init`, `go get -tool <package>@<version>`, `go build -o <tools path> <package>`
 * (about 4 minutes on a fresh machine; `npm run provision` does it once).
 */
export function resolveJaeger(opts: { toolsDir: string; env: NodeJS.ProcessEnv; logger: Logger }): ResolvedJaeger {
  const tried: string[] = [];
  const runs = (p: string) => commandOutput(p, ['version']) !== undefined;
  const fromEnv = opts.env.JAEGER_PATH;
  if (fromEnv) {
    if (existsSync(fromEnv) && runs(fromEnv)) return { path: fromEnv, source: 'JAEGER_PATH' };
    tried.push(`JAEGER_PATH: ${fromEnv} ${existsSync(fromEnv) ? 'does not run' : 'does not exist'}`);
  } else tried.push('JAEGER_PATH: not set');
  const bin = path.join(opts.toolsDir, 'jaeger', JAEGER_VERSION, 'jaeger');
  if (existsSync(bin)) {
    if (runs(bin)) return { path: bin, source: 'tools-folder' };
    tried.push(`tools folder: ${bin} does not run`);
  } else tried.push(`tools folder: no ${bin}`);

  const buildRoot = path.join(opts.toolsDir, 'jaeger', 'build');
  mkdirSync(buildRoot, { recursive: true });
  const work = mkdtempSync(path.join(buildRoot, 'mod-'));
  opts.logger.info(`building jaeger ${JAEGER_VERSION} through the Go module proxy in ${work} (a few minutes, once)`);
  const go = (args: string[]) => spawnSync('go', args, { cwd: work, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  for (const args of [
    ['mod', 'init', 'capstan.local/jaeger-build'],
    ['get', '-tool', `${JAEGER_GO_PACKAGE}@${JAEGER_VERSION}`],
    ['build', '-o', bin, JAEGER_GO_PACKAGE],
  ]) {
    const r = go(args);
    if (r.status !== 0) {
      tried.push(`go ${args.join(' ')}: ${r.error?.message ?? lastLine(r.stderr) ?? `exit ${r.status}`}`);
      throw new Error(`could not find or build jaeger. Tried:\n  - ${tried.join('\n  - ')}\nSet JAEGER_PATH to a jaeger (v2) binary.`);
    }
  }
  if (!runs(bin)) throw new Error(`jaeger was built at ${bin} but does not run; set JAEGER_PATH to a jaeger (v2) binary`);
  return { path: bin, source: 'go-build' };
}

export interface Jaeger {
  /** Where OTLP over HTTP is received: what OTEL_EXPORTER_OTLP_ENDPOINT is set to. */
  otlpEndpoint: string;
  /** The query service and UI, e.g. http://127.0.0.1:41234 (a trace: <queryUrl>/trace/<id>). */
  queryUrl: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/**
 * The configuration a test or dev Jaeger runs with: traces kept in memory, OTLP over HTTP the only
 * receiver, the query API and UI on one chosen port, everything on `host`. Jaeger's defaults
 * would open about fourteen fixed ports on all interfaces (16686, 4317, 4318, 8888, 13133, …):
 * this lists every listener explicitly and turns the collector's own metrics endpoint off.
 */
export function jaegerConfig(o: { host: string; otlpHttpPort: number; queryPort: number; queryGrpcPort: number }): string {
  return `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    # Jaeger does not trace its own queries (it would export to localhost:4317).
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: ${o.host}:${o.queryPort}
    grpc:
      endpoint: ${o.host}:${o.queryGrpcPort}
receivers:
  otlp:
    protocols:
      http:
        endpoint: ${o.host}:${o.otlpHttpPort}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`;
}

/** Starts Jaeger on free ports of 127.0.0.1 with jaegerConfig, and waits until its query API answers. */
export async function startJaeger(o: { jaegerPath: string; dir: string; logger: Logger; startTimeoutMs?: number }): Promise<Jaeger> {
  const host = '127.0.0.1';
  mkdirSync(o.dir, { recursive: true });
  const [otlpHttpPort, queryPort, queryGrpcPort] = [await freePort(host), await freePort(host), await freePort(host)] as [number, number, number];
  const configFile = path.join(o.dir, 'jaeger.yaml');
  writeFileSync(configFile, jaegerConfig({ host, otlpHttpPort, queryPort, queryGrpcPort }));
  const logFile = path.join(o.dir, 'jaeger.log');
  const out = openSync(logFile, 'a');
  // Not the caller's OTEL_* (a traced test's): Jaeger would export its own spans with them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const child = spawn(o.jaegerPath, ['--config', configFile], { stdio: ['ignore', out, out], env });
  const queryUrl = `http://${host}:${queryPort}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`jaeger exited with ${child.exitCode} at start; its log (${logFile}):\n${tail(logFile)}`);
    try {
      const res = await fetch(`${queryUrl}/api/services`);
      // The OTLP receiver starts with the query service; both are up once this answers.
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`jaeger did not answer on ${queryUrl} within ${o.startTimeoutMs ?? 30_000} ms; its log (${logFile}):\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  o.logger.info(`jaeger: OTLP/HTTP on http://${host}:${otlpHttpPort}, UI and query API on ${queryUrl}`);
  return { otlpEndpoint: `http://${host}:${otlpHttpPort}`, queryUrl, process: child, stop };
}

/** A span as Jaeger's query API returns it (the fields the tests read). */
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references: { refType: string; traceID: string; spanID: string }[];
  tags: { key: string; type: string; value: unknown }[];
  processID: string;
}

export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags: { key: string; value: unknown }[] }>;
}

/** One trace from Jaeger's query HTTP API (`/api/traces/<id>`); undefined while Jaeger has none with that id. */
export async function readTrace(queryUrl: string, traceId: string): Promise<JaegerTrace | undefined> {
  const res = await fetch(`${queryUrl}/api/traces/${encodeURIComponent(traceId)}`);
  if (res.status === 404) return undefined;
  if (!res.ok) throw new Error(`jaeger query ${queryUrl}/api/traces/${traceId}: HTTP ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { data?: JaegerTrace[] };
  return body.data?.[0];
}

/** The value of a span's tag, or undefined. */
export function spanTag(span: JaegerSpan, key: string): unknown {
  return span.tags.find((t) => t.key === key)?.value;
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}
