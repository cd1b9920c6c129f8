// The ops listener (CAPSTAN_OPS_LISTEN): what Prometheus, a load balancer or an orchestrator asks a
// Capstan process, on an address of its own — /metrics, /livez and /readyz. Nothing else is served.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from '../logger.js';

/** One check of a health report: ok, or why not. */
export interface HealthCheck {
  ok: boolean;
  /** Why not (or a note when ok), short and free of secrets. */
  detail?: string;
}

/** What /livez and /readyz answer: 200 when every check is ok, 503 otherwise, with the checks as JSON. */
export interface HealthReport {
  ok: boolean;
  checks: Record<string, HealthCheck>;
}

/** What /metrics answers: Prometheus's text format. */
export interface MetricsText {
  contentType: string;
  body: string;
}

export interface OpsServerOptions {
  listen: { host: string; port: number };
  /** Bearer token /metrics requires (CAPSTAN_METRICS_TOKEN); none: the separate address is the guard. */
  metricsToken?: string;
  /** /metrics: absent → 404. */
  metrics?: () => Promise<MetricsText>;
  /** /livez: absent → always ok while the process answers. */
  live?: () => Promise<HealthReport>;
  /** /readyz: absent → 404. */
  ready?: () => Promise<HealthReport>;
  logger: Logger;
}

export interface OpsServer {
  /** Where it listens (the real port when 0 was asked for). */
  address: { host: string; port: number };
  url: string;
  close(): Promise<void>;
}

/** Starts the ops listener; resolves once it listens. */
export async function startOpsServer(o: OpsServerOptions): Promise<OpsServer> {
  const server = createServer((req, res) => void handleOps(o, req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.listen.port, o.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    address: { host: a.address, port: a.port },
    url: `http://${host}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Serves one ops request (also used by the API for /metrics, /livez and /readyz on its own port). */
export async function handleOps(o: Omit<OpsServerOptions, 'listen'>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://ops');
  if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405, 'text/plain', 'use GET\n');
  try {
    if (url.pathname === '/metrics' && o.metrics) {
      if (o.metricsToken && !bearerMatches(req.headers.authorization, o.metricsToken)) {
        res.setHeader('www-authenticate', 'Bearer realm="capstan-metrics"');
        return answer(res, 401, 'text/plain', 'a scrape token is required: Authorization: Bearer <CAPSTAN_METRICS_TOKEN>\n');
      }
      const m = await o.metrics();
      return answer(res, 200, m.contentType, m.body);
    }
    if (url.pathname === '/livez') return health(res, o.live ? await o.live() : { ok: true, checks: {} });
    if (url.pathname === '/readyz' && o.ready) return health(res, await o.ready());
    return answer(res, 404, 'text/plain', 'not found: this listener serves /metrics, /livez and /readyz\n');
  } catch (e) {
    o.logger.warn('ops request failed', { path: url.pathname, error: e instanceof Error ? e.message : String(e) });
    return answer(res, 500, 'text/plain', 'failed; see the log\n');
  }
}

function health(res: ServerResponse, r: HealthReport): void {
  answer(res, r.ok ? 200 : 503, 'application/json', `${JSON.stringify({ status: r.ok ? 'ok' : 'unavailable', checks: r.checks })}\n`);
}

function answer(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(body);
}

/** Constant-time comparison of `Authorization: Bearer <token>` with the expected token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}
