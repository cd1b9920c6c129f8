// The API seen from a real browser (headless Chromium over real HTTP on loopback): a page on
// another origin cannot drive it, even holding a token, unless CAPSTAN_CORS_ORIGINS names that
// origin; form-style posts that skip the preflight are refused by the server; GraphiQL on the
// API's own origin works and sends the dev token; a DNS-rebinding host name is refused (421).
import { mkdirSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../lib/logger.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, visibilityCaughtUp, waitFor, type TestStack } from '../helpers/stack.js';

const RESULTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-results');

/** A logger that keeps what it is told (to see from the server's side what was refused). */
function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (m: string, meta?: unknown) => void lines.push(`${m} ${JSON.stringify(meta ?? {})}`);
  return { lines, debug: () => {}, info: keep, warn: keep, error: keep };
}

const START = 'mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }';
const body = (name: string) => JSON.stringify({ query: START, variables: { s: { name, stages: [{ id: 'w', plugin: 'test:write-note' }] } } });

/**
 * The "evil" page: what a site on another origin can do from the user's browser. Each attempt
 * reports what the page could see (a rejected fetch, an opaque answer, or the answer itself).
 */
const EVIL_PAGE = /* html */ `<!doctype html><html><head><title>evil</title></head><body>
<iframe name="sink" style="display:none"></iframe>
<script>
async function attempt(url, init) {
  try {
    const r = await fetch(url, init);
    let text = null;
    try { text = await r.text(); } catch {}
    return { rejected: false, type: r.type, status: r.status, text };
  } catch (e) {
    return { rejected: true, error: String(e) };
  }
}
// JSON with the stolen token: needs a CORS preflight (content-type and authorization are not "simple").
window.withToken = (api, token, body) =>
  attempt(api + '/graphql', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token }, body });
// A "simple" request: no preflight, so the server receives it; the page must not read the answer.
window.simplePost = (api, body) => attempt(api + '/graphql', { method: 'POST', headers: { 'content-type': 'text/plain' }, body });
window.noCorsPost = (api, path, body) => attempt(api + path, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body });
// The classic: an HTML form posting text/plain whose one field makes the body valid JSON.
window.formPost = (api, body) => new Promise((resolve) => {
  const f = document.createElement('form');
  f.method = 'POST'; f.action = api + '/graphql'; f.enctype = 'text/plain'; f.target = 'sink';
  const i = document.createElement('input');
  i.name = body.slice(0, -2) + ',"x":"'; i.value = '"}';
  f.appendChild(i); document.body.appendChild(f);
  document.querySelector('iframe').addEventListener('load', () => resolve('loaded'), { once: true });
  f.submit();
});
// From a sandboxed frame, whose origin is "null": a server answering "Access-Control-Allow-Origin: null" would let it read.
window.fromNullOrigin = (api, token, body) => new Promise((resolve) => {
  const f = document.createElement('iframe');
  f.sandbox = 'allow-scripts';
  const call = 'fetch(' + JSON.stringify(api + '/graphql') + ', { method: "POST", headers: { "content-type": "application/json", authorization: ' + JSON.stringify('Bearer ' + token) + ' }, body: ' + JSON.stringify(body) + ' })';
  f.srcdoc = '<script>' + call + '.then(async (r) => parent.postMessage({ rejected: false, status: r.status, text: await r.text(), origin: String(self.origin) }, "*"), (e) => parent.postMessage({ rejected: true, error: String(e), origin: String(self.origin) }, "*"))</' + 'script>';
  window.addEventListener('message', (m) => resolve(m.data), { once: true });
  document.body.appendChild(f);
});
</script></body></html>`;

let browser: Browser;
let evil: Server;
let evilPort: number;
/** The evil page's origin, and a second origin on the same server (127.0.0.1 ≠ localhost). */
let evilOrigin: string;
let otherOrigin: string;

beforeAll(async () => {
  evil = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(EVIL_PAGE);
  });
  await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
  evilPort = (evil.address() as { port: number }).port;
  evilOrigin = `http://localhost:${evilPort}`;
  otherOrigin = `http://127.0.0.1:${evilPort}`;
  // DNS rebinding, for real: the attacker's name resolves to this machine.
  browser = await launchChromium(['--host-resolver-rules=MAP evil.example 127.0.0.1, MAP localhost 127.0.0.1']);
  mkdirSync(RESULTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  await new Promise((r) => (evil ? evil.close(r) : r(undefined)));
});

async function evilPage(origin: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  return page;
}

/** Runs of a pipeline, counted once visibility (eventually consistent) has caught up with every start before the call. */
async function runsOf(stack: TestStack, pipeline: string): Promise<number> {
  await visibilityCaughtUp(stack.client);
  return (await stack.client.workflow.count(`CapstanPipeline = '${pipeline}'`)).count;
}

/** A raw HTTP request (fetch cannot set Host). */
function raw(
  url: string,
  o: { method: string; path: string; headers: Record<string, string>; body?: string },
): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method: o.method, path: o.path, headers: o.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

describe('a page on another origin (no CORS origins configured)', () => {
  let stack: TestStack;
  const log = recorder();
  beforeAll(async () => {
    stack = await startTestStack({ plugins, logger: log });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('cannot start a run even holding an admin token: the preflight gets no allow-origin, the request is never sent', async () => {
    const preflight = await raw(stack.url, {
      method: 'OPTIONS',
      path: '/graphql',
      headers: { origin: evilOrigin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(preflight.status).toBeLessThan(500);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();

    const page = await evilPage(evilOrigin);
    log.lines.length = 0;
    const seen = await page.evaluate(([api, token, b]) => (window as any).withToken(api, token, b), [
      stack.url,
      stack.adminToken,
      body('browser-evil-token'),
    ] as const);
    expect(seen, JSON.stringify(seen)).toMatchObject({ rejected: true });
    expect(seen.error).toMatch(/Failed to fetch/);
    expect(await runsOf(stack, 'browser-evil-token')).toBe(0);
    // The request itself never reached the API (the browser stopped at the preflight): nothing was refused or logged.
    expect(log.lines.filter((l) => l.startsWith('request refused'))).toEqual([]);
    await page.close();
  });

  it('simple (form-style) posts are refused by the server and unreadable by the page; no run starts', async () => {
    const page = await evilPage(evilOrigin);
    log.lines.length = 0;
    const b = body('browser-evil-simple');
    const cors = await page.evaluate(([api, x]) => (window as any).simplePost(api, x), [stack.url, b] as const);
    const opaque = await page.evaluate(([api, x]) => (window as any).noCorsPost(api, '/graphql', x), [stack.url, b] as const);
    const predict = await page.evaluate(([api]) => (window as any).noCorsPost(api, '/models/none/predict', '{"inputs":[[0]]}'), [stack.url] as const);
    const form = await page.evaluate(([api, x]) => (window as any).formPost(api, x), [stack.url, b] as const);
    // The page sees nothing: a rejected fetch (no allow-origin) or an opaque answer with no status or body.
    expect(cors, JSON.stringify(cors)).toMatchObject({ rejected: true });
    expect(opaque).toMatchObject({ rejected: false, type: 'opaque', status: 0, text: '' });
    expect(predict).toMatchObject({ rejected: false, type: 'opaque', status: 0, text: '' });
    expect(form).toBe('loaded');
    // The server got the four requests and refused each for want of a token.
    const refused = log.lines.filter((l) => l.startsWith('request refused: no Authorization header'));
    expect(refused, log.lines.join('\n')).toHaveLength(4);
    expect(refused.filter((l) => l.includes('"path":"/graphql"'))).toHaveLength(3);
    expect(await runsOf(stack, 'browser-evil-simple')).toBe(0);
    await page.close();
  });

  it('a DNS-rebinding host name reaching the loopback API gets 421 HOST_NOT_ALLOWED (and no GraphiQL token)', async () => {
    const port = new URL(stack.url).port;
    const post = await raw(stack.url, {
      method: 'POST',
      path: '/graphql',
      headers: { host: `evil.example:${port}`, 'content-type': 'application/json', authorization: `Bearer ${stack.adminToken}` },
      body: JSON.stringify({ query: '{ whoami { role } }' }),
    });
    expect(post.status).toBe(421);
    expect(JSON.parse(post.text).errors[0].extensions.code).toBe('HOST_NOT_ALLOWED');
    const predict = await raw(stack.url, {
      method: 'POST',
      path: '/models/none/predict',
      headers: { host: 'evil.example', 'content-type': 'application/json' },
      body: '{"inputs":[[0]]}',
    });
    expect(predict.status).toBe(421);
    // In the browser: the attacker's name resolving to 127.0.0.1 (the rebinding itself).
    const page = await browser.newPage();
    const res = await page.goto(`http://evil.example:${port}/graphql`);
    expect(res?.status()).toBe(421);
    expect(await page.locator('body').innerText()).toContain('HOST_NOT_ALLOWED');
    await page.close();
  });
});

describe('the same page once CAPSTAN_CORS_ORIGINS names its origin', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ plugins, env: { CAPSTAN_CORS_ORIGINS: `${evilOrigin},http://app.example` } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('the allowed origin may call the API with a token; another origin still may not', async () => {
    const page = await evilPage(evilOrigin);
    const ok = await page.evaluate(([api, token, b]) => (window as any).withToken(api, token, b), [
      stack.url,
      stack.adminToken,
      body('browser-cors-allowed'),
    ] as const);
    expect(ok, JSON.stringify(ok)).toMatchObject({ rejected: false, type: 'cors', status: 200 });
    expect(JSON.parse(ok.text).data.startPipeline.id).toMatch(/^pipeline\/browser-cors-allowed\//);
    // Allowed does not mean anonymous: without the token the API still says 401, and the page may read that.
    const anon = await page.evaluate(
      ([api, b]) =>
        fetch(`${api}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: b }).then(async (r) => ({
          status: r.status,
          text: await r.text(),
        })),
      [stack.url, body('browser-cors-allowed')] as const,
    );
    expect(anon.status).toBe(401);
    expect(JSON.parse(anon.text).errors[0].extensions.code).toBe('UNAUTHENTICATED');
    // The predict route too: its preflight passes and its answers (here: no such model) are readable.
    const predict = await page.evaluate(
      ([api, token]) =>
        fetch(`${api}/models/none/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: '{"inputs":[[0]]}',
        }).then(async (r) => ({ status: r.status, text: await r.text() })),
      [stack.url, stack.adminToken] as const,
    );
    expect(predict.status).toBe(404);
    expect(JSON.parse(predict.text).error.code).toBe('MODEL_NOT_FOUND');
    // A sandboxed frame (origin "null") on the allowed page is not the allowed origin.
    const sandboxed = await page.evaluate(([api, token, b]) => (window as any).fromNullOrigin(api, token, b), [
      stack.url,
      stack.adminToken,
      body('browser-cors-allowed'),
    ] as const);
    expect(sandboxed, JSON.stringify(sandboxed)).toMatchObject({ rejected: true, origin: 'null' });
    const nullPreflight = await raw(stack.url, {
      method: 'OPTIONS',
      path: '/graphql',
      headers: { origin: 'null', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(nullPreflight.headers['access-control-allow-origin']).toBeUndefined();
    await page.close();

    const other = await evilPage(otherOrigin);
    const refused = await other.evaluate(([api, token, b]) => (window as any).withToken(api, token, b), [
      stack.url,
      stack.adminToken,
      body('browser-cors-allowed'),
    ] as const);
    expect(refused, JSON.stringify(refused)).toMatchObject({ rejected: true });
    await other.close();
    expect(await runsOf(stack, 'browser-cors-allowed')).toBe(1);
  });
});

describe('with CAPSTAN_AUTH=off (loopback dev mode, no tokens): the CSRF rule alone', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ plugins, env: { CAPSTAN_AUTH: 'off' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('form-style posts from another origin are refused (403, a code) and start nothing; the API itself still answers JSON clients', async () => {
    const page = await evilPage(evilOrigin);
    const b = body('browser-csrf');
    await page.evaluate(([api, x]) => (window as any).simplePost(api, x), [stack.url, b] as const);
    await page.evaluate(([api, x]) => (window as any).noCorsPost(api, '/graphql', x), [stack.url, b] as const);
    await page.evaluate(([api, x]) => (window as any).formPost(api, x), [stack.url, b] as const);
    await page.close();
    expect(await runsOf(stack, 'browser-csrf')).toBe(0);
    // What the server answered those requests (the page could not read it).
    for (const [ct, path, payload] of [
      ['text/plain', '/graphql', b],
      ['application/x-www-form-urlencoded', '/graphql', b],
      ['multipart/form-data; boundary=x', '/graphql', b],
      ['text/plain', '/models/none/predict', '{"inputs":[[0]]}'],
    ] as const) {
      const r = await raw(stack.url, { method: 'POST', path, headers: { 'content-type': ct, origin: evilOrigin }, body: payload });
      expect(r.status, `${ct} ${path}: ${r.text}`).toBe(403);
      const j = JSON.parse(r.text);
      expect(j.errors?.[0]?.extensions?.code ?? j.error?.code, `${ct} ${path}: ${r.text}`).toBe('CSRF_HEADER_MISSING');
    }
    expect(await runsOf(stack, 'browser-csrf')).toBe(0);
    // A JSON client is not a simple request, so it needs no extra header.
    const ok = await raw(stack.url, {
      method: 'POST',
      path: '/graphql',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ whoami { role } }' }),
    });
    expect(JSON.parse(ok.text).data.whoami.role).toBe('ADMIN');
  });
});

describe('GraphiQL on the API’s own origin', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // The stack's admin token exists, as with `npm start`: the page must still carry none.
    stack = await startTestStack({ plugins });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('the page carries no token, loopback or proxied, and is served under a strict CSP that forbids framing', async () => {
    for (const headers of [{}, { 'x-forwarded-for': '203.0.113.9' }, { 'x-forwarded-for': '127.0.0.1' }] as Record<string, string>[]) {
      const res = await raw(stack.url, {
        method: 'GET',
        path: '/graphql?query=mutation%20%7B%20x%20%7D',
        headers: { host: new URL(stack.url).host, accept: 'text/html', ...headers },
      });
      expect(res.status).toBe(200);
      expect(res.text).toContain('<title>Capstan GraphiQL</title>');
      expect(res.text).not.toContain(stack.adminToken);
      expect(res.text).not.toMatch(/cap_[A-Za-z0-9]/);
      expect(res.text).not.toContain('Bearer ey');
      // No inline script: every <script> has a src on this origin.
      expect([...res.text.matchAll(/<script([^>]*)>/g)].every((m) => /src="\/graphiql\//.test(m[1]!))).toBe(true);
      // The link's query is not in the page either.
      expect(res.text).not.toContain('mutation');
      const csp = String(res.headers['content-security-policy']);
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toMatch(/script-src 'self'(;|$)/);
      expect(csp).not.toMatch(/script-src[^;]*unsafe/);
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
    }
  });

  it('signs in with a pasted token kept in the tab, runs a query with it, and a ?query= link fills nothing', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    // The page is self-contained (GraphiQL's assets are served by the API): nothing is fetched from elsewhere.
    const external: string[] = [];
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(stack.url) && !u.startsWith('blob:') && !u.startsWith('data:')) external.push(u);
    });
    // The page works under its CSP: the browser reports no violation.
    const violations: string[] = [];
    page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
    });
    const sent: { authorization: string | undefined }[] = [];
    page.on('request', (r) => {
      if (r.url().startsWith(`${stack.url}/graphql`) && r.method() === 'POST') sent.push({ authorization: r.headers().authorization });
    });
    // A link that tries to stage a mutation in the editor.
    const res = await page.goto(`${stack.url}/graphql?query=${encodeURIComponent('mutation { revokeToken(id: "x") { id } }')}`);
    expect(res?.status()).toBe(200);
    expect(await res!.text()).not.toContain(stack.adminToken);
    // Signed out: the sign-in form, no GraphiQL and no request to the API yet.
    await page.locator('#capstan-token').waitFor({ timeout: 30_000 });
    expect(sent).toEqual([]);
    await page.locator('#capstan-token').fill(stack.adminToken);
    await page.locator('#capstan-signin button[type=submit]').click();

    // The real GraphiQL: the editor holds no staged mutation; type a query, run it, read the response pane.
    const editor = page.locator('.graphiql-query-editor .monaco-editor').first();
    await editor.waitFor({ timeout: 60_000 });
    expect(await page.locator('.graphiql-query-editor').innerText()).not.toContain('revokeToken');
    expect(page.url()).not.toContain('revokeToken');
    await editor.click();
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.press('Delete');
    await page.keyboard.type('{ whoami { name role } }');
    await page.locator('.graphiql-execute-button').click();
    await page.locator('.graphiql-response').getByText('"role": "ADMIN"').waitFor({ timeout: 30_000 });
    const result = await page.locator('.graphiql-response').innerText();
    expect(external, 'requests leaving the machine').toEqual([]);
    expect(result).toMatch(/"role":\s*"ADMIN"/);
    expect(result).toContain('test-admin');
    expect(sent.length).toBeGreaterThan(0);
    expect(
      sent.every((r) => r.authorization === `Bearer ${stack.adminToken}`),
      JSON.stringify(sent.map((r) => !!r.authorization)),
    ).toBe(true);
    // The token lives in this tab's sessionStorage only (not localStorage, where GraphiQL keeps its tabs).
    expect(await page.evaluate(() => sessionStorage.getItem('capstan.token'))).toBe(stack.adminToken);
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }))).not.toContain(stack.adminToken);
    expect(violations, violations.join('\n')).toEqual([]);
    const shot = path.join(RESULTS, 'graphiql.png');
    await page.screenshot({ path: shot });
    console.info(`[graphiql] screenshot: ${path.relative(process.cwd(), shot)}`);
    // Sign out: the token is gone from the tab and the form is back.
    await page.locator('#capstan-signout').click();
    await page.locator('#capstan-token').waitFor({ timeout: 30_000 });
    expect(await page.evaluate(() => sessionStorage.getItem('capstan.token'))).toBeNull();
    await page.close();
  });

  it('a page on another origin cannot frame GraphiQL', async () => {
    const page = await evilPage(evilOrigin);
    const blocked: string[] = [];
    page.on('console', (m) => {
      if (/frame-ancestors|X-Frame-Options|Refused to (display|frame)/i.test(m.text())) blocked.push(m.text());
    });
    await page.evaluate((src) => {
      const f = document.createElement('iframe');
      f.src = src;
      document.body.appendChild(f);
    }, `${stack.url}/graphql`);
    await waitFor(async () => blocked.length > 0, 'the browser to refuse the frame', 30_000);
    await page.close();
  });
});
