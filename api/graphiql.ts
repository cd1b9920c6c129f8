// GraphiQL at GET /graphql, as a page that carries no token. Like the console, it signs in with a
// token the user pastes, keeps it in the tab's sessionStorage (key `capstan.token`, shared with the
// console on the same origin) and sends it as `Authorization: Bearer` on each request. The page
// runs no inline script: GraphiQL's bundle (from @graphql-yoga/render-graphiql, no CDN), its
// editor workers and the sign-in script are files under /graphiql/, so a strict
// Content-Security-Policy holds. A `?query=` in a link does not fill the editor: the sign-in
// script drops the query string before GraphiQL reads it, so a link cannot stage a mutation for
// a signed-in admin to run.
import { createHash } from 'node:crypto';

/** The GraphiQL page's policy: its own scripts and API only; no frames, forms elsewhere or plugins. */
export const GRAPHIQL_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  // GraphiQL's editor (Monaco) sets styles from script at run time; styles cannot run code.
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  // Monaco starts its workers from blob: URLs that import the files below (blob: URLs can only be
  // made by the page's own scripts, which script-src confines).
  "worker-src 'self' blob:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers of every answer of the page and its assets. */
const COMMON = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' } as const;

const PAGE = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Capstan GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/graphiql/graphiql.css">
<link rel="stylesheet" href="/graphiql/page.css">
</head>
<body class="no-focus-outline">
<noscript>GraphiQL needs JavaScript.</noscript>
<form id="capstan-signin" hidden>
  <h1>Capstan GraphiQL</h1>
  <p>Sign in with an API token. It is kept in this tab only (sessionStorage) and sent as
  <code>Authorization: Bearer</code>. <code>npm start</code> prints where the admin token file is;
  <code>npm run token -- create</code> makes others.</p>
  <label for="capstan-token">Token</label>
  <input id="capstan-token" name="token" type="password" autocomplete="off" spellcheck="false" required>
  <button type="submit">Sign in</button>
</form>
<div id="capstan-bar" hidden>Signed in with a token kept in this tab. <button id="capstan-signout" type="button">Sign out</button></div>
<div id="root"></div>
<script src="/graphiql/graphiql.js"></script>
<script src="/graphiql/boot.js"></script>
</body>
</html>
`;

const PAGE_CSS = `
html, body { height: 100%; margin: 0; }
body { display: flex; flex-direction: column; font-family: system-ui, sans-serif; }
#root { flex: 1; min-height: 0; }
#root > .graphiql-container { height: 100%; }
#capstan-signin { max-width: 32rem; margin: 4rem auto; display: flex; flex-direction: column; gap: .5rem; }
#capstan-signin[hidden], #capstan-bar[hidden] { display: none; }
#capstan-bar { font-size: 12px; padding: 2px 8px; text-align: right; }
`;

/** The sign-in script: no token in the page, the tab's own token on every request. */
const BOOT = `(function () {
  'use strict';
  var KEY = 'capstan.token';
  // A link's ?query= (or variables, headers) is not put in the editor.
  if (location.search) history.replaceState(null, '', location.pathname + location.hash);
  var workers = { editorWorkerService: '/graphiql/worker/editor.js', json: '/graphiql/worker/json.js', graphql: '/graphiql/worker/graphql.js' };
  self.MonacoEnvironment = { globalAPI: false, getWorkerUrl: function (_id, label) { return workers[label]; } };
  var form = document.getElementById('capstan-signin');
  var input = document.getElementById('capstan-token');
  var bar = document.getElementById('capstan-bar');
  function start(token) {
    form.hidden = true;
    bar.hidden = false;
    YogaGraphiQL.renderYogaGraphiQL(document.getElementById('root'), {
      title: 'Capstan',
      endpoint: '/graphql',
      shouldPersistHeaders: false,
      additionalHeaders: { Authorization: 'Bearer ' + token }
    });
  }
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    var t = input.value.trim();
    if (!t) return;
    input.value = '';
    sessionStorage.setItem(KEY, t);
    start(t);
  });
  document.getElementById('capstan-signout').addEventListener('click', function () {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  var token = sessionStorage.getItem(KEY);
  if (token) start(token);
  else { form.hidden = false; input.focus(); }
})();
`;

interface Asset {
  body: string;
  type: string;
  etag: string;
}

export interface GraphiQLPage {
  /** Whether this request is for the page (GET /graphql asking for HTML) or one of its assets. */
  owns(request: Request): boolean;
  serve(request: Request): Promise<Response>;
}

/** GraphiQL's page and assets; the bundle (~6 MB) is loaded on first use and kept in memory. */
export function graphiqlPage(endpoint = '/graphql'): GraphiQLPage {
  let assets: Promise<Map<string, Asset>> | undefined;
  const load = () => (assets ??= loadAssets());
  return {
    owns(request) {
      const { pathname } = new URL(request.url);
      if (pathname.startsWith('/graphiql/')) return true;
      return (pathname === endpoint || pathname === `${endpoint}/`) && request.method === 'GET' && !!request.headers.get('accept')?.includes('text/html');
    },
    async serve(request) {
      const { pathname } = new URL(request.url);
      if (request.method !== 'GET' && request.method !== 'HEAD')
        return text(405, `${request.method} is not allowed on ${pathname}; use GET\n`, { allow: 'GET, HEAD' });
      const name = pathname.startsWith('/graphiql/') ? pathname.slice('/graphiql/'.length) : 'index.html';
      const asset = (await load()).get(name);
      if (!asset) return text(404, `nothing is served at ${pathname}; GraphiQL is at ${endpoint}\n`);
      const headers: Record<string, string> = {
        'content-type': asset.type,
        etag: asset.etag,
        'cache-control': 'no-cache',
        ...COMMON,
        ...(name === 'index.html' ? { 'content-security-policy': GRAPHIQL_CSP } : {}),
      };
      if (request.headers.get('if-none-match') === asset.etag) return new Response(null, { status: 304, headers });
      return new Response(request.method === 'HEAD' ? null : asset.body, { status: 200, headers });
    },
  };
}

async function loadAssets(): Promise<Map<string, Asset>> {
  const g = await import('@graphql-yoga/render-graphiql/graphiql');
  const js = 'text/javascript; charset=utf-8';
  const entries: [string, string, string][] = [
    ['index.html', PAGE, 'text/html; charset=utf-8'],
    ['graphiql.js', g.js, js],
    ['graphiql.css', g.css, 'text/css; charset=utf-8'],
    ['page.css', PAGE_CSS, 'text/css; charset=utf-8'],
    ['boot.js', BOOT, js],
    ['worker/editor.js', g.editorWorkerService, js],
    ['worker/json.js', g.jsonWorker, js],
    ['worker/graphql.js', g.graphqlWorker, js],
  ];
  return new Map(entries.map(([name, body, type]) => [name, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` }]));
}

function text(status: number, body: string, extra: Record<string, string> = {}): Response {
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...COMMON, ...extra } });
}
