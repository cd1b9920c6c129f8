// Serves the built console (console/dist, made by scripts/build-console.ts) at /console. The page
// holds no data — it signs in with a token and reads the GraphQL API — so it is served without
// authentication (the Host rule still applies). Hashed assets are cached for a year; the HTML is
// revalidated on every load and carries a strict Content-Security-Policy.
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const DIST = path.resolve(import.meta.dirname, '../console/dist');

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

/** The console page's policy: only its own scripts, styles and API; no frames, forms elsewhere or plugins. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export interface ConsoleFiles {
  /** Whether this path is the console's (`/console`, `/console/…`). */
  owns(pathname: string): boolean;
  serve(request: Request): Promise<Response>;
}

/** The console's files, read on first request and kept in memory (the whole console is ~100 kB). */
export function consoleFiles(dir = DIST): ConsoleFiles {
  const cache = new Map<string, Promise<Buffer | undefined>>();
  const load = (name: string) => {
    let p = cache.get(name);
    if (!p) {
      p = readFile(path.join(dir, name)).catch(() => undefined);
      cache.set(name, p);
      void p.then((b) => b === undefined && cache.delete(name)); // built later: look again next time
    }
    return p;
  };
  const common = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' };
  const text = (status: number, body: string, extra: Record<string, string> = {}) =>
    new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...common, ...extra } });
  return {
    owns: (p) => p === '/console' || p.startsWith('/console/'),
    async serve(request) {
      if (request.method !== 'GET' && request.method !== 'HEAD')
        return text(405, `${request.method} is not allowed on the console; use GET\n`, { allow: 'GET, HEAD' });
      const { pathname } = new URL(request.url);
      const rest = pathname.slice('/console'.length);
      const asset = /^\/assets\/([A-Za-z0-9_.-]+)$/.exec(rest)?.[1];
      const name = asset && !asset.startsWith('.') ? `assets/${asset}` : rest === '' || rest === '/' || rest === '/index.html' ? 'index.html' : undefined;
      if (!name) return text(404, `nothing is served at ${pathname}; the console is at /console\n`);
      const body = await load(name);
      if (!body) {
        return name === 'index.html'
          ? text(503, 'the console is not built: run `npm run build:console` (npm start builds it)\n')
          : text(404, `no console asset ${asset}\n`);
      }
      const isHtml = name === 'index.html';
      const headers: Record<string, string> = {
        'content-type': TYPES[path.extname(name)] ?? 'application/octet-stream',
        'content-length': String(body.length),
        'cache-control': isHtml ? 'no-cache' : 'public, max-age=31536000, immutable',
        ...common,
        ...(isHtml ? { 'content-security-policy': CONSOLE_CSP, 'x-frame-options': 'DENY' } : {}),
      };
      return new Response(request.method === 'HEAD' ? null : new Uint8Array(body), { status: 200, headers });
    },
  };
}
