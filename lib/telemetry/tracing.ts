// OpenTelemetry tracing (issue 22): started from the standard OTEL_* variables when
// config.telemetry.tracing is on, never otherwise. The SDK is imported only when tracing starts,
// so a process with tracing off loads none of it, opens nothing and exports nothing; the helpers
// below then cost one boolean check.
import { context, propagation, ROOT_CONTEXT, SpanStatusCode, trace, TraceFlags, type Attributes, type Context, type Span } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { setTraceHooks, type TraceHooks } from './trace-context.js';

// The parts that need no OpenTelemetry, kept importable from here.
export { otelEnv, traceparentEnv, tracingEnabled } from './trace-context.js';

/** The instrumentation scope of Capstan's own spans. */
export const TRACER_NAME = 'capstan';

/** What a started tracing setup gives its process. */
export interface Tracing {
  /** This process's resource (service.name …): Temporal's workflow span exporter needs it. */
  resource: Resource;
  /** The span processor every span goes through (also the workflow spans, via makeWorkflowExporter). */
  spanProcessor: SpanProcessor;
  serviceName: string;
  /** Flushes what is buffered and stops exporting; call once, when the process stops. */
  shutdown(): Promise<void>;
}

let active: Tracing | undefined;

/** The running setup, if any (the worker's Temporal interceptors need its processor and resource). */
export function activeTracing(): Tracing | undefined {
  return active;
}

export interface StartTracingOptions {
  /** config.telemetry.tracing: when false, nothing starts and undefined is returned. */
  enabled: boolean;
  /** The service name when OTEL_SERVICE_NAME is not set (capstan-api, capstan-worker, capstan-training). */
  defaultServiceName: string;
  /** The environment OTEL_* is read from (the entry point's process.env). */
  env: NodeJS.ProcessEnv;
}

/**
 * Starts OpenTelemetry's Node SDK: W3C trace-context propagation, async context, and spans
 * exported in batches with OTLP over HTTP/protobuf to OTEL_EXPORTER_OTLP(_TRACES)_ENDPOINT (the
 * exporter reads the rest of OTEL_EXPORTER_OTLP_* itself: headers, timeout, compression). Logs
 * and metrics are not exported through OpenTelemetry (metrics are Prometheus's, logs go to
 * stderr). Returns undefined, having started nothing, when tracing is off. Idempotent.
 */
export async function startTracing(o: StartTracingOptions): Promise<Tracing | undefined> {
  if (!o.enabled) return undefined;
  if (active) return active;
  const [{ NodeSDK }, { OTLPTraceExporter }, resources, base, core] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/exporter-trace-otlp-proto'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/core'),
  ]);
  const serviceName = o.env.OTEL_SERVICE_NAME?.trim() || o.defaultServiceName;
  const resource = resources.Resource.default()
    .merge(resources.detectResourcesSync({ detectors: [resources.envDetectorSync, resources.processDetectorSync, resources.hostDetectorSync] }))
    .merge(new resources.Resource({ 'service.name': serviceName }));
  const exporters = (o.env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  const spanProcessor = exporters.includes('console')
    ? new base.SimpleSpanProcessor(new base.ConsoleSpanExporter())
    : new base.BatchSpanProcessor(new OTLPTraceExporter());
  const sdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    spanProcessors: [spanProcessor],
    textMapPropagator: new core.CompositePropagator({ propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()] }),
    // Without this the SDK would export logs over OTLP by default; Capstan's logs go to stderr.
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();
  return activate({ resource, spanProcessor, serviceName }, () => sdk.shutdown());
}

/** Makes this the process's tracing (what activeTracing() returns) until its shutdown. */
function activate(parts: Omit<Tracing, 'shutdown'>, stop: () => Promise<void>): Tracing {
  const tracing: Tracing = {
    ...parts,
    shutdown: async () => {
      if (active !== tracing) return;
      active = undefined;
      setTraceHooks(undefined);
      await stop();
    },
  };
  active = tracing;
  setTraceHooks(otelTraceHooks);
  return tracing;
}

/**
 * A training child's (or other Node child's) own small tracer provider: spans of this process
 * exported with OTLP over HTTP/protobuf, parented by the TRACEPARENT its parent passed in. Used
 * where the whole Node SDK would be too heavy for a short process; started only when tracing is
 * configured (the child inherits OTEL_*) and a TRACEPARENT is given.
 */
export async function startChildTracing(o: { enabled: boolean; defaultServiceName: string; env: NodeJS.ProcessEnv }): Promise<Tracing | undefined> {
  if (!o.enabled || !o.env.TRACEPARENT) return undefined;
  if (active) return active;
  const [{ OTLPTraceExporter }, resources, base, core] = await Promise.all([
    import('@opentelemetry/exporter-trace-otlp-proto'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/core'),
  ]);
  const serviceName = o.env.OTEL_SERVICE_NAME?.trim() || o.defaultServiceName;
  const resource = resources.Resource.default()
    .merge(resources.envDetectorSync.detect())
    .merge(new resources.Resource({ 'service.name': serviceName }));
  const spanProcessor = new base.BatchSpanProcessor(new OTLPTraceExporter());
  const provider = new base.BasicTracerProvider({ resource, spanProcessors: [spanProcessor] });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  return activate({ resource, spanProcessor, serviceName }, () => provider.shutdown());
}

/**
 * Runs fn inside a span named `name` with these attributes; the span ends when fn settles and
 * records its error. With tracing off, fn runs as is (no span object, no context switch).
 */
export function withSpan<T>(name: string, attrs: Attributes, fn: (span?: Span) => Promise<T>, parent?: Context): Promise<T> {
  if (!active) return fn();
  const tracer = trace.getTracer(TRACER_NAME);
  return tracer.startActiveSpan(name, { attributes: attrs }, parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (e) {
      span.recordException(e instanceof Error ? e : String(e));
      span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
      throw e;
    } finally {
      span.end();
    }
  });
}

/**
 * withSpan, but only inside a trace already (an active span): work a timer starts in the
 * background (the ledger outbox's periodic flush) makes no root spans of its own.
 */
export function withChildSpan<T>(name: string, attrs: Attributes, fn: (span?: Span) => Promise<T>): Promise<T> {
  if (!active || !trace.getActiveSpan()) return fn();
  return withSpan(name, attrs, fn);
}

/** Adds attributes to the active span (a no-op without one). */
export function setSpanAttributes(attrs: Attributes): void {
  if (!active) return;
  trace.getActiveSpan()?.setAttributes(attrs);
}

/** The trace id of the active span, if a sampled one is active (an unsampled trace is exported nowhere: no id to link to). */
export function currentTraceId(): string | undefined {
  const sc = trace.getActiveSpan()?.spanContext();
  return sc && trace.isSpanContextValid(sc) && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? sc.traceId : undefined;
}

/** What trace-context.ts answers while tracing runs: read from OpenTelemetry's active context. */
export const otelTraceHooks: TraceHooks = {
  spanIds() {
    const sc = trace.getActiveSpan()?.spanContext();
    return sc && trace.isSpanContextValid(sc) ? { traceId: sc.traceId, spanId: sc.spanId } : undefined;
  },
  traceparent() {
    if (!currentTraceId()) return {};
    const carrier: Record<string, string> = {};
    propagation.inject(context.active(), carrier);
    return {
      ...(carrier.traceparent ? { TRACEPARENT: carrier.traceparent } : {}),
      ...(carrier.tracestate ? { TRACESTATE: carrier.tracestate } : {}),
    };
  },
};

/** The context a child process continues: its parent's span from TRACEPARENT/TRACESTATE (the root context without them). */
export function contextFromTraceparent(env: { TRACEPARENT?: string | undefined; TRACESTATE?: string | undefined }): Context {
  if (!env.TRACEPARENT) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent: env.TRACEPARENT, ...(env.TRACESTATE ? { tracestate: env.TRACESTATE } : {}) });
}

/**
 * Whether OTEL_* in this environment asks for traces: what app/config.ts decides for
 * config.telemetry.tracing, for processes that load no configuration (the training child).
 */
export function tracingConfigured(env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (exporters.includes('none')) return false;
  return exporters.length > 0 || env.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined;
}
