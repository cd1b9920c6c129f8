// What code outside the tracer needs of the running trace — whether tracing is on, the active
// span's ids for log lines, TRACEPARENT for a child process — without importing OpenTelemetry:
// lib/telemetry/tracing.ts installs the hooks when tracing starts. So the logger and the plugin
// SDK (`capstan/plugin`: command stages) stay free of OpenTelemetry packages, and a process with
// tracing off pays one undefined check.

export interface TraceHooks {
  /** The active span's ids, for log lines; undefined outside any span. */
  spanIds(): { traceId: string; spanId: string } | undefined;
  /** TRACEPARENT (and TRACESTATE) of the active sampled span, for a child process's environment; {} without one. */
  traceparent(): { TRACEPARENT?: string; TRACESTATE?: string };
}

let hooks: TraceHooks | undefined;

/** Installed by tracing.ts when tracing starts, removed when it shuts down. */
export function setTraceHooks(h: TraceHooks | undefined): void {
  hooks = h;
}

/** Whether this process exports spans (startTracing or startChildTracing ran). */
export function tracingEnabled(): boolean {
  return hooks !== undefined;
}

/** The active span's trace and span ids, when tracing runs and a span is active. */
export function activeSpanIds(): { traceId: string; spanId: string } | undefined {
  return hooks?.spanIds();
}

/** TRACEPARENT (and TRACESTATE) of the active span, for a child process's environment; {} without one. */
export function traceparentEnv(): { TRACEPARENT?: string; TRACESTATE?: string } {
  return hooks?.traceparent() ?? {};
}

/** OTEL_* variables of this environment: what a child process needs to export to the same place. */
export function otelEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith('OTEL_') && v !== undefined) out[k] = v;
  return out;
}
