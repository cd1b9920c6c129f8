// The worker process's metrics (job="capstan-worker"): Capstan's own (stage attempts, what runs
// report through their sink) on a registry of the worker's own, and the Temporal SDK's worker
// metrics, which the SDK serves on a loopback port of its own: /metrics appends that text, so one
// scrape of the ops listener gets both and the SDK's listener never leaves the host.
import type { RuntimeOptions } from '@temporalio/worker';
import type { Logger } from '../lib/logger.js';
import { createMetricsRegistry, fetchMetricsText, freeLocalPort, renderMetrics } from '../lib/telemetry/metrics.js';
import type { MetricsText } from '../lib/telemetry/ops-server.js';
import { createWorkerMetrics, type WorkerMetrics } from '../lib/telemetry/worker-metrics.js';

export interface WorkerTelemetry {
  /** What createWorkers counts into. */
  metrics: WorkerMetrics;
  /** /metrics' text: Capstan's metrics, then the Temporal SDK's (when its exporter is on). */
  render(): Promise<MetricsText>;
}

/** Where the Temporal SDK's Prometheus exporter listens: a free loopback port, chosen before Runtime.install. */
export interface SdkMetricsEndpoint {
  bindAddress: string;
  url: string;
}

export async function sdkMetricsEndpoint(): Promise<SdkMetricsEndpoint> {
  const port = await freeLocalPort('127.0.0.1');
  return { bindAddress: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}/metrics` };
}

/** Runtime.install's telemetry options that turn the SDK's Prometheus exporter on at `endpoint` (names prefixed `temporal_`). */
export function sdkTelemetryOptions(endpoint: SdkMetricsEndpoint): NonNullable<RuntimeOptions['telemetryOptions']> {
  return { metrics: { prometheus: { bindAddress: endpoint.bindAddress } } };
}

export function createWorkerTelemetry(o: { roles: readonly string[]; sdk?: SdkMetricsEndpoint; logger: Logger }): WorkerTelemetry {
  const registry = createMetricsRegistry();
  const metrics = createWorkerMetrics(registry, { roles: o.roles });
  const sdkUrl = o.sdk?.url;
  const extra = sdkUrl ? [{ name: "the Temporal SDK's metrics", text: () => fetchMetricsText(sdkUrl) }] : [];
  return { metrics, render: () => renderMetrics(registry, { extra, logger: o.logger }) };
}
