import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../lib/logger.js';
import type { HealthProviders } from '../lib/telemetry/health.js';
import { withLogContext } from '../lib/telemetry/log-context.js';
import { handleOps, type OpsServerOptions } from '../lib/telemetry/ops-server.js';
import type { Api } from './app.js';
import type { RequestMeta } from './auth.js';
import { TrustedProxies } from './proxies.js';

export interface NodeHandlerOptions {
  /** Largest request body; a larger one is refused while it streams in (HTTP 413), before it is buffered. */
  maxBodyBytes: number;
  logger: Logger;
  /**
   * /livez and /readyz (app/health.ts): answered first, without a token and whatever the Host
   * header — load balancers and kubelets probe by IP — as they tell only ok/not and check names.
   */
  health?: HealthProviders;
  /**
   * What the API's own port also serves for operators, outside the API's token auth: /metrics,
   * only when a scrape token (CAPSTAN_METRICS_TOKEN) guards it — without one, /metrics is served
   * on the ops listener only and is an unknown path here.
   */
  ops?: Omit<OpsServerOptions, 'listen' | 'logger'>;
}

/**
 * The API as a Node `http` request listener. A request is admitted on its headers first (Host,
 * token, permission, rate limit: Api.admit), so a request without a valid token is answered
 * without its body being read (a few KiB are drained so the client can read the refusal, then
 * the connection is closed); an admitted one's body is read under a size limit. The client
 * address (the peer, or X-Forwarded-For from a trusted proxy) is passed along, responses are
 * streamed (live run streams included), and the request is aborted when the client goes away.
 */
export function createNodeHandler(api: Api, o: NodeHandlerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const proxies = new TrustedProxies(api.deps.http.trustedProxies ?? []);
  const ops = o.ops?.metrics && o.ops.metricsToken ? { ...o.ops, logger: o.logger } : undefined;
  return (req, res) => {
    // Prometheus's scrape: its own bearer token (handleOps checks it), never the API's tokens.
    if (ops && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) return void handleOps(ops, req, res);
    // Every line logged while the request is handled carries its id; the client gets it back (X-Request-Id).
    const requestId = requestIdOf(req.headers['x-request-id']);
    res.setHeader('x-request-id', requestId);
    void withLogContext({ requestId }, () => handle(api, o, proxies, req, res));
  };
}

/** The caller's X-Request-Id when it is a plain id (a proxy's), else a new one. */
function requestIdOf(given: string | string[] | undefined): string {
  return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
}

const HEALTH_PATHS = new Set(['/livez', '/readyz']);

/** What is read of a refused request's body before its connection is closed (enough for the client to read the answer). */
const REFUSED_DRAIN_BYTES = 64 * 1024;

async function handle(api: Api, o: NodeHandlerOptions, proxies: TrustedProxies, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (o.health && HEALTH_PATHS.has((req.url ?? '/').split('?')[0]!)) {
    await handleOps({ live: o.health.live, ready: o.health.ready, logger: o.logger }, req, res);
    return;
  }
  const controller = new AbortController();
  res.once('close', () => controller.abort());
  const peer = req.socket.remoteAddress;
  const forwarded = req.headers['x-forwarded-for'];
  const meta: RequestMeta = peer ? { remoteAddress: proxies.clientAddress(peer, Array.isArray(forwarded) ? forwarded.join(',') : forwarded) } : {};
  try {
    const method = req.method ?? 'GET';
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
    const url = `http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`;
    let head: Request;
    try {
      head = new Request(url, { method, headers });
    } catch {
      // Fetch refuses some methods (TRACE, TRACK, CONNECT) and URLs (a Host header that names no host): the client's mistake, not a failure.
      if (/^(TRACE|TRACK|CONNECT)$/i.test(method)) refuse(res, 405, 'METHOD_NOT_ALLOWED', `${method} is not allowed: use GET or POST`);
      else refuse(res, 400, 'BAD_REQUEST', 'the request line or the Host header is not valid');
      drainThenClose(req);
      return;
    }
    // Decided on the headers: a refused request's body is never buffered.
    const admission = await api.admit(head, meta);
    if (admission instanceof Response) {
      await send(res, admission, controller.signal, { connection: 'close' });
      drainThenClose(req);
      return;
    }
    let body: Buffer | undefined;
    if (method !== 'GET' && method !== 'HEAD') {
      const max = Math.min(o.maxBodyBytes, admission.maxBodyBytes);
      const read = await readLimited(req, max);
      if (read === 'too-large') {
        refuse(res, 413, 'BODY_TOO_LARGE', `request body is larger than ${max} bytes`);
        req.destroy();
        return;
      }
      body = read;
    }
    const request = new Request(url, {
      method,
      headers,
      signal: controller.signal,
      ...(body?.byteLength ? { body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength) as unknown as BodyInit } : {}),
    });
    await send(res, await api.fetch(request, meta, admission), controller.signal);
  } catch (e) {
    if (controller.signal.aborted) return;
    // The path only: a query string may carry anything (GraphQL variables over GET).
    o.logger.error('request failed', {
      method: req.method,
      path: (req.url ?? '/').split('?')[0],
      ...(meta.remoteAddress ? { remote: meta.remoteAddress } : {}),
      error: e instanceof Error ? e.message : String(e),
    });
    if (!res.headersSent) refuse(res, 500, 'INTERNAL', 'the request failed; see the API log');
    else res.destroy();
  }
}

/** Writes a fetch Response to the Node response, streaming its body. */
async function send(res: ServerResponse, response: Response, signal: AbortSignal, extra: Record<string, string> = {}): Promise<void> {
  const out: Record<string, string | string[]> = { ...extra };
  response.headers.forEach((v, k) => {
    out[k] = k === 'set-cookie' ? response.headers.getSetCookie() : v;
  });
  res.writeHead(response.status, out);
  if (!response.body) {
    res.end();
    return;
  }
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    if (signal.aborted) break;
    if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
  }
  res.end();
}

/**
 * After a refusal: reads (and drops) at most REFUSED_DRAIN_BYTES more of the body, so a client
 * still sending can read the answer, then closes the connection.
 */
function drainThenClose(req: IncomingMessage): void {
  if (req.complete) return;
  let n = 0;
  req.on('data', (c: Buffer) => {
    n += c.length;
    if (n > REFUSED_DRAIN_BYTES) req.destroy();
  });
  req.once('error', () => {});
  req.resume();
}

/** Reads a body, stopping as soon as it passes the limit (a declared Content-Length over it is refused unread). */
function readLimited(req: IncomingMessage, max: number): Promise<Buffer | 'too-large'> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) return Promise.resolve('too-large');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const onData = (c: Buffer) => {
      n += c.length;
      if (n > max) {
        req.off('data', onData);
        req.pause();
        resolve('too-large');
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function refuse(res: ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify({ errors: [{ message, extensions: { code } }] }));
}
