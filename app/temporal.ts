import { Connection, Client, type ClientOptions } from '@temporalio/client';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import { NativeConnection } from '@temporalio/worker';
import proto from '@temporalio/proto';

const { temporal } = proto;
import { tracingEnabled } from '../lib/telemetry/tracing.js';
import { allSearchAttributes } from '../workflows/search-attributes.js';

/** Where to reach Temporal: the standard TEMPORAL_* environment / temporal.toml profile; the local dev server otherwise. */
export interface TemporalTarget {
  namespace: string;
  connectionOptions: ReturnType<typeof loadClientConnectConfig>['connectionOptions'];
}

export function temporalTarget(env: NodeJS.ProcessEnv): TemporalTarget {
  const cfg = loadClientConnectConfig({ overrideEnvVars: env as Record<string, string> });
  return {
    namespace: cfg.namespace ?? 'default',
    connectionOptions: { ...cfg.connectionOptions, address: cfg.connectionOptions.address ?? '127.0.0.1:7233' },
  };
}

export async function connectClient(t: TemporalTarget): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect(t.connectionOptions as Parameters<typeof Connection.connect>[0]);
  return { connection, client: new Client({ connection, namespace: t.namespace, ...clientTracing() }) };
}

/**
 * Temporal's client interceptor when this process traces: starting a run (and signals, queries,
 * updates) gets a span, and its context travels in the workflow's headers, so the run's workflow
 * span is a child of the GraphQL operation that started it. Nothing when tracing is off.
 */
export function clientTracing(): Pick<ClientOptions, 'interceptors'> {
  return tracingEnabled() ? { interceptors: { workflow: [new OpenTelemetryWorkflowClientInterceptor()] } } : {};
}

export function connectWorker(t: TemporalTarget): Promise<NativeConnection> {
  return NativeConnection.connect(t.connectionOptions as Parameters<typeof NativeConnection.connect>[0]);
}

const KEYWORD = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;

/**
 * Registers Capstan's search attributes on the namespace if they are missing (any cluster).
 * The dev stack also passes them as --search-attribute flags; this covers other clusters.
 */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const have = new Set(Object.keys(existing.customAttributes ?? {}));
  const missing = allSearchAttributes.filter((k) => !have.has(k.name));
  if (missing.length === 0) return [];
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map((k) => [k.name, KEYWORD])),
  });
  return missing.map((k) => k.name);
}
