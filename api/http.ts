import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../lib/logger.js';
import type { Api } from './app.js';

export interface NodeHandlerOptions {
  /** Largest request body; a larger one is refused while it streams in (HTTP 413), before it is buffered. */
  maxBodyBytes: number;
  logger: Logger;
}

/**
 * The API as a Node `http` request listener: bodies read under a size limit, the peer address
 * passed along, responses streamed (live run streams included), and the request aborted when the
 * client goes away.
 */
export function createNodeHandler(api: Api, o: NodeHandlerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void handle(api, o, req, res);
  };
}

async function handle(api: Api, o: NodeHandlerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const controller = new AbortController();
  res.once('close', () => controller.abort());
  try {
    const method = req.method ?? 'GET';
    let body: Buffer | undefined;
    if (method !== 'GET' && method !== 'HEAD') {
      const read = await readLimited(req, o.maxBodyBytes);
      if (read === 'too-large') {
        refuse(res, 413, 'BODY_TOO_LARGE', `request body is larger than ${o.maxBodyBytes} bytes`);
        req.destroy();
        return;
      }
      body = read;
    }
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
    let request: Request;
    try {
      request = new Request(`http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`, {
        method,
        headers,
        signal: controller.signal,
        ...(body && body.byteLength ? { body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength) as unknown as BodyInit } : {}),
      });
    } catch {
      // Fetch refuses some methods (TRACE, TRACK, CONNECT) and URLs (a Host header that names no host): the client's mistake, not a failure.
      if (/^(TRACE|TRACK|CONNECT)$/i.test(method)) refuse(res, 405, 'METHOD_NOT_ALLOWED', `${method} is not allowed: use GET or POST`);
      else refuse(res, 400, 'BAD_REQUEST', 'the request line or the Host header is not valid');
      return;
    }
    const response = await api.fetch(request, { ...(req.socket.remoteAddress ? { remoteAddress: req.socket.remoteAddress } : {}) });
    const out: Record<string, string | string[]> = {};
    response.headers.forEach((v, k) => {
      out[k] = k === 'set-cookie' ? response.headers.getSetCookie() : v;
    });
    res.writeHead(response.status, out);
    if (!response.body) {
      res.end();
      return;
    }
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      if (controller.signal.aborted) break;
      if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
    }
    res.end();
  } catch (e) {
    if (controller.signal.aborted) return;
    o.logger.error('request failed', { url: req.url, error: e instanceof Error ? e.message : String(e) });
    if (!res.headersSent) refuse(res, 500, 'INTERNAL', 'the request failed; see the API log');
    else res.destroy();
  }
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
