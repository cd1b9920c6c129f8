// Prometheus metrics of one Capstan process: a registry of its own (never prom-client's global
// one, so an API and a worker built in one process — as the tests do — never collide), rendered
// in Prometheus's text format, plus the helpers scrape-time collectors share.
import net from 'node:net';
import { Registry } from 'prom-client';
import type { Logger } from '../logger.js';
import type { MetricsText } from './ops-server.js';

/** A new, empty registry for one process part (API or worker). */
export function createMetricsRegistry(): Registry {
  return new Registry();
}

/**
 * Renders the registry, then appends the text of `extra` sources (e.g. the Temporal SDK's own
 * Prometheus endpoint) so one scrape gets both. A failing extra source is logged and left out:
 * Capstan's own metrics are still served.
 */
export async function renderMetrics(
  registry: Registry,
  o: { extra?: { name: string; text: () => Promise<string> }[]; logger?: Logger } = {},
): Promise<MetricsText> {
  const parts = [await registry.metrics()];
  for (const x of o.extra ?? []) {
    try {
      parts.push(await x.text());
    } catch (e) {
      o.logger?.warn(`metrics: ${x.name} could not be read; left out of this scrape`, { error: e instanceof Error ? e.message : String(e) });
    }
  }
  return { contentType: registry.contentType, body: parts.map((p) => (p.endsWith('\n') || p === '' ? p : `${p}\n`)).join('') };
}

/**
 * Wraps scrape-time work so that calls within `ms` of the last one (and calls while it runs)
 * share its result, a failure included: a fast or repeated scraper costs the backing store
 * (Temporal, the database) one read per `ms`, not one per scrape — also while it is down.
 */
export function cachedFor<T>(ms: number, fn: () => Promise<T>): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | undefined;
  return () => {
    const now = Date.now();
    if (last && now - last.at < ms) return last.value;
    const value = fn();
    // Handled by whoever awaits it; a kept rejection is not an unhandled one.
    value.catch(() => undefined);
    last = { at: now, value };
    return value;
  };
}

/** The text of a Prometheus endpoint (the Temporal SDK's, on loopback), with a short timeout. */
export async function fetchMetricsText(url: string, timeoutMs = 2000): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`${url} answered HTTP ${res.status}`);
  return res.text();
}

/** A TCP port free on `host` now (for a listener that must be given a fixed port, like the Temporal SDK's exporter). */
export function freeLocalPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Money in micros (the ledger's exact integers) as the number Prometheus carries: the nearest double to the decimal. */
export function microsToNumber(micros: bigint): number {
  return Number(micros) / 1e6;
}
