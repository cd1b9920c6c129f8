// With tracing off (OTEL_* not asking for traces) nothing is exported and nothing new listens:
// a fake OTLP/HTTP collector that a stray endpoint variable points at receives no request while a
// run with a training child goes through the API and a real worker, and the process listens on
// no port besides the test's own API server.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../app/config.js';
import { activeTracing, startTracing, tracingConfigured } from '../../lib/telemetry/tracing.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

/** TCP ports this process listens on: its socket inodes matched against /proc/net/tcp{,6} LISTEN rows. */
function listeningPorts(pid = process.pid): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // st 0A = LISTEN; local address is hex ip:port; inode is the 10th field.
      if (f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

const received: string[] = [];
let collector: Server;
let endpoint: string;
let stack: TestStack;
let before: number[];

beforeAll(async () => {
  collector = createServer((req, res) => {
    received.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => res.end());
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(collector.address() as { port: number }).port}`;
  // An endpoint is configured but traces are switched off: OTEL_TRACES_EXPORTER=none. The
  // training children inherit both and must stay silent too.
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
  process.env.OTEL_TRACES_EXPORTER = 'none';
  before = listeningPorts();
});

afterAll(async () => {
  await stack?.close();
  collector?.close();
});

describe('tracing off', () => {
  it('decides "off" from the settings, starts nothing and exports nothing for a whole run', { timeout: 600_000 }, async () => {
    // Off with nothing set, and off with an endpoint but OTEL_TRACES_EXPORTER=none.
    expect(loadConfig({ CAPSTAN_DATA_DIR: '/tmp' }, '/tmp').telemetry.tracing).toBe(false);
    const config = loadConfig({ CAPSTAN_DATA_DIR: '/tmp', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_TRACES_EXPORTER: 'none' }, '/tmp');
    expect(config.telemetry.tracing).toBe(false);
    expect(tracingConfigured(process.env)).toBe(false);
    // What the entry points do: nothing starts.
    expect(await startTracing({ enabled: config.telemetry.tracing, defaultServiceName: 'capstan-worker', env: process.env })).toBeUndefined();
    expect(activeTracing()).toBeUndefined();

    stack = await startTestStack({ plugins: [dataPrepStage(), pretrainStage()], env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_TRACES_EXPORTER: 'none' } });
    const apiPort = Number(new URL(stack.url).port);
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id traceId } }`, {
      s: {
        name: 'untraced',
        stages: [
          { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 1000, seed: 6 } },
          { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 1 } },
        ],
      },
    });
    expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
    expect(r.data.startPipeline.traceId).toBeNull();
    const id: string = r.data.startPipeline.id;
    const run = await waitFor(
      async () => {
        const v = (await stack.gql(`query($id: ID!) { run(id: $id) { status traceId traceUrl stages { id status metrics } } }`, { id })).data.run;
        if (['FAILED', 'CANCELLED', 'TERMINATED'].includes(v.status)) throw new Error(`run ${id} is ${v.status}`);
        return v.status === 'COMPLETED' ? v : undefined;
      },
      `run ${id} to complete`,
      480_000,
      500,
    );
    expect(run.traceId).toBeNull();
    expect(run.traceUrl).toBeNull();
    // The training child ran (and exited), with the collector's address in its environment.
    expect(run.stages.find((s: { id: string }) => s.id === 'pretrain').status).toBe('SUCCEEDED');

    // Nothing was exported: this process started no exporter (above), and a training child that
    // traced would have flushed its span before exiting, which it has.
    expect(received).toEqual([]);
    // (The collector does record what reaches it.)
    await fetch(`${endpoint}/v1/traces`, { method: 'POST', body: 'x' });
    expect(received).toEqual(['POST /v1/traces']);
    // Nothing new listens: only the test's own API server and the fake collector (both there by the test's doing).
    const after = listeningPorts().filter((p) => p !== apiPort);
    expect(after).toEqual(before);
  });
});
