// Attacks on the HTTP layer, against a real stack over real HTTP (issue 20): bodies without a
// token are refused before they are read, a revoked or expired token's live stream closes, list
// sizes count in the query cost, predictions are rate-limited per token, and X-Forwarded-For is
// believed only from a trusted proxy.
import { request as httpRequest } from 'node:http';
import { parse } from 'graphql';
import { createSchema } from 'graphql-yoga';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiModules, GRAPHQL_LIMITS } from '../../api/app.js';
import { listCost } from '../../api/cost.js';
import { TrustedProxies } from '../../api/proxies.js';
import type { Logger } from '../../lib/logger.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

/** A logger that keeps what it is told. */
function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (m: string, meta?: unknown) => void lines.push(`${m} ${JSON.stringify(meta ?? {})}`);
  return { lines, debug: () => {}, info: keep, warn: keep, error: keep };
}

/**
 * POSTs a body over a fresh connection: the status, or how the connection ended. With `hold`, the
 * last byte is sent only once `hold` resolves, so every body is in flight (and, on a server that
 * buffers bodies, in its memory) at the same time; `sent` resolves once the rest is written or the
 * connection is gone.
 */
function post(
  url: string,
  path: string,
  body: Buffer,
  headers: Record<string, string> = {},
  hold?: { until: Promise<void>; sent: () => void },
): Promise<{ status?: number; error?: string }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: { status?: number; error?: string }) => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        method: 'POST',
        path,
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': String(body.length), ...headers },
      },
      (res) => {
        res.resume();
        done({ status: res.statusCode ?? 0 });
      },
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      hold?.sent();
      done({ error: e.code ?? e.message });
    });
    if (!hold) return void req.end(body);
    req.write(body.subarray(0, body.length - 1), () => hold.sent());
    void hold.until.then(() => req.end(body.subarray(body.length - 1)));
  });
}

/** A function that acts on its first call only. */
function once(f: () => void): () => void {
  let called = false;
  return () => {
    if (!called) {
      called = true;
      f();
    }
  };
}

describe('bodies without a token', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ plugins });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('are answered 401 on their headers: the server does not wait for the body', async () => {
    // Headers that announce 16 MiB, then nothing: a server that reads the body first never answers.
    const u = new URL(stack.url);
    const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(
        {
          host: u.hostname,
          port: u.port,
          method: 'POST',
          path: '/graphql',
          agent: false,
          headers: { 'content-type': 'application/json', 'content-length': String(16 * 1024 * 1024 - 1024) },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      req.write('{"query":"');
      req.flushHeaders();
      setTimeout(() => reject(new Error('no answer within 10 s: the body is being waited for')), 10_000).unref();
    });
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.text).errors[0].extensions.code).toBe('UNAUTHENTICATED');
    // The same for a prediction route.
    const predict = await post(stack.url, '/models/none/predict', Buffer.from('{"inputs":[[0]]}'));
    expect(predict.status).toBe(401);
  });

  it('200 concurrent 16 MiB bodies without a token are all refused and the API process does not grow by their size', async () => {
    const body = Buffer.alloc(16 * 1024 * 1024 - 1024, 0x20); // under CAPSTAN_MAX_BODY_BYTES (16 MiB): only the token is wrong
    body.write('{"query":"{ whoami { role } }","x":"');
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    let results: Promise<{ status?: number; error?: string }>[] = [];
    // Every body all but its last byte in flight at once (a server that buffers bodies holds 200 × 16 MiB), then finished.
    let release!: () => void;
    const until = new Promise<void>((r) => (release = r));
    let sent = 0;
    const allSent = new Promise<void>((r) => {
      const one = () => void (++sent === 200 && r());
      results = Array.from({ length: 200 }, (_, i) =>
        post(stack.url, '/graphql', body, i % 2 ? { authorization: 'Bearer cap_not.a-real-token' } : {}, { until, sent: once(one) }),
      );
    });
    await allSent;
    peak = Math.max(peak, process.memoryUsage().rss);
    release();
    const settled = await Promise.all(results);
    clearInterval(sample);
    peak = Math.max(peak, process.memoryUsage().rss);
    const tally: Record<string, number> = {};
    for (const r of settled) tally[r.status ? String(r.status) : r.error!] = (tally[r.status ? String(r.status) : r.error!] ?? 0) + 1;
    const growthMiB = (peak - before) / 1024 / 1024;
    console.info(`[bodies] 200 × 16 MiB without a token: ${JSON.stringify(tally)}; RSS grew ${growthMiB.toFixed(0)} MiB at most`);
    // Refused: a 401, or the connection closed while the client was still sending (after the 401 was written).
    for (const r of settled) expect(r.status === 401 || ['ECONNRESET', 'EPIPE'].includes(r.error ?? ''), JSON.stringify(r)).toBe(true);
    expect(settled.some((r) => r.status === 401)).toBe(true);
    // 200 × 16 MiB is 3.2 GiB; the shared client buffer and socket buffers are a few tens of MiB.
    expect(growthMiB).toBeLessThan(200);
    // The API still answers.
    expect((await stack.gql('{ whoami { role } }')).data.whoami.role).toBe('ADMIN');
  });
});

describe('a live run stream whose token stops being valid', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // The idle limit is far away (15 min by default): only the token check can end these streams.
    stack = await startTestStack({ plugins });
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** Opens runEvents over SSE and reads it until it ends. */
  function open(runId: string, token: string) {
    const started = Date.now();
    let text = '';
    const done = (async () => {
      const res = await fetch(`${stack.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: `subscription($id: ID!) { runEvents(runId: $id) { seq type } }`, variables: { id: runId } }),
      });
      const reader = res.body!.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
      return { text, endedAt: Date.now(), started };
    })();
    return { done, text: () => text };
  }

  it('closes within 5 s of a revocation, and of an expiry, with an UNAUTHENTICATED event, while the run goes on', async () => {
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: { name: 'long-stream', stages: [{ id: 'w', plugin: 'test:wait', params: { ms: 120_000 } }] },
    });
    const id: string = r.data.startPipeline.id;
    await waitFor(
      async () => (await stack.gql(`query($id: ID!) { run(id: $id) { stages { status } } }`, { id })).data.run.stages[0].status === 'RUNNING',
      'the stage to run',
      60_000,
    );

    const revoked = await stack.runtime.tokens.create({ name: 'stream-revoked', role: 'viewer' });
    const expiring = await stack.runtime.tokens.create({ name: 'stream-expiring', role: 'viewer', expiresAt: new Date(Date.now() + 4000) });
    const a = open(id, revoked.token);
    const b = open(id, expiring.token);
    // Both streams are live (they have sent the run's events so far).
    await waitFor(async () => a.text().includes('"seq"') && b.text().includes('"seq"'), 'both streams to send events', 30_000);

    const revokedAt = Date.now();
    await stack.runtime.tokens.revoke(revoked.info.id);
    const ra = await a.done;
    expect(ra.endedAt - revokedAt).toBeLessThan(5000);
    expect(ra.text).toContain('UNAUTHENTICATED');
    expect(ra.text).toContain('revoked');

    const rb = await b.done;
    expect(rb.endedAt - Date.parse(expiring.info.expiresAt!)).toBeLessThan(5000);
    expect(rb.text).toContain('UNAUTHENTICATED');
    expect(rb.text).toContain('expired');

    // The run itself is not affected; a valid token still streams it.
    expect((await stack.gql(`query($id: ID!) { run(id: $id) { status } }`, { id })).data.run.status).toBe('RUNNING');
    await stack.gql(`mutation($id: ID!) { cancelRun(runId: $id) { id } }`, { id });
  });
});

describe('query cost counts list sizes', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ plugins });
  });
  afterAll(async () => {
    await stack?.close();
  });

  // Filtered to a pipeline with no runs: what is allowed runs in no time (the shared dev server holds many runs).
  const fanOut = (aliases: number, first: number) =>
    `{ ${Array.from({ length: aliases }, (_, i) => `a${i}: runs(pipeline: "cost-test-none", first: ${first}) { edges { node { id stages { id params } } } }`).join(' ')} }`;

  it('refuses runs(first: 100) × aliases × stages { params } with QUERY_LIMIT_EXCEEDED before anything runs, the same with the size as a variable', async () => {
    const schema = createSchema({ typeDefs: apiModules.map((m) => m.typeDefs) });
    // Six aliases, each up to 100 runs with their stages: 600 run reads in one request. Armor's
    // per-field cost (its limit is GRAPHQL_LIMITS.maxCost) is the same for first: 1 and first: 100,
    // and lets six through; it is the list sizes that refuse it.
    expect(listCost(schema, parse(fanOut(6, 100)))).toBeGreaterThan(GRAPHQL_LIMITS.maxListCost);
    const refused = await stack.gql(fanOut(6, 100));
    expect(refused.errors?.[0]?.extensions?.code, JSON.stringify(refused)).toBe('QUERY_LIMIT_EXCEEDED');
    expect(refused.errors?.[0]?.message).toMatch(/query cost \d+ is over the limit of 10000/);
    expect(refused.data ?? null).toBeNull();
    // A size passed as a variable counts the same.
    const viaVariable = await stack.gql(
      `query($n: Int) { ${Array.from({ length: 6 }, (_, i) => `a${i}: runs(first: $n) { edges { node { id stages { id params } } } }`).join(' ')} }`,
      { n: 100 },
    );
    expect(viaVariable.errors?.[0]?.extensions?.code).toBe('QUERY_LIMIT_EXCEEDED');
    // The same document with small pages runs.
    const small = await stack.gql(fanOut(6, 1));
    expect(small.errors, JSON.stringify(small.errors)).toBeUndefined();
    // One page of 100 runs with their stages, as a client would ask, still works.
    const page = await stack.gql(fanOut(1, 100));
    expect(page.errors, JSON.stringify(page.errors)).toBeUndefined();
  });

  it('leaves the console’s own queries under the limit', () => {
    const schema = createSchema({ typeDefs: apiModules.map((m) => m.typeDefs) });
    // The costliest query the console sends (console/src/models.ts), with its nested lists.
    const models = `{ models { name production { version } servingVersion servingRuntime aliases { alias version }
      versions { version runId testAccuracy p50LatencyMs p99LatencyMs sizeBytes sparsity dtype format runtime createdAt aliases gates { gate passed threshold measured note } }
      productionHistory { alias version previousVersion reason at } } }`;
    expect(listCost(schema, parse(models))).toBeLessThan(GRAPHQL_LIMITS.maxListCost);
  });
});

describe('prediction rate limit per token', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({ plugins, env: { CAPSTAN_PREDICT_RATE_PER_MIN: '6', CAPSTAN_PREDICT_BURST: '3' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('answers HTTP 429 with Retry-After on the route and RATE_LIMITED with retryAfterSeconds in GraphQL; other tokens keep their own budget', async () => {
    const user = await stack.token('predictor', 'rate-user');
    const predict = (token: string) =>
      fetch(`${stack.url}/models/none/predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: '{"inputs":[[0]]}',
      });
    // The burst of 3: each answered on its merits (no such model).
    for (let i = 0; i < 3; i++) expect((await predict(user)).status).toBe(404);
    const limited = await predict(user);
    expect(limited.status).toBe(429);
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(10); // 6 a minute: one every 10 s
    const body = (await limited.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('RATE_LIMITED');
    // The predict query shares the bucket.
    const q = await stack.gql(`{ predict(model: "none", inputs: [[0]]) { version } }`, {}, user);
    expect(q.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
    expect(q.errors?.[0]?.extensions?.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    // Another token has its own bucket; other operations are not limited.
    expect((await predict(stack.adminToken)).status).toBe(404);
    expect((await stack.gql('{ whoami { name } }', {}, user)).data.whoami.name).toBe('rate-user');
    // The bucket refills at the configured rate (refused attempts take nothing from it).
    await waitFor(async () => (await predict(user)).status === 404, 'the bucket to refill', 20_000, 500);
  });
});

describe('X-Forwarded-For and trusted proxies', () => {
  it('picks the rightmost hop that is not a trusted proxy, and ignores the header from anyone else', () => {
    const none = new TrustedProxies([]);
    expect(none.clientAddress('127.0.0.1', '203.0.113.9')).toBe('127.0.0.1');
    const p = new TrustedProxies(['127.0.0.1', '10.0.0.0/8', '::1']);
    expect(p.clientAddress('127.0.0.1', '203.0.113.9')).toBe('203.0.113.9');
    expect(p.clientAddress('::ffff:127.0.0.1', '203.0.113.9')).toBe('203.0.113.9');
    // A client that sends its own X-Forwarded-For: the proxy appends the real address, which wins.
    expect(p.clientAddress('127.0.0.1', '1.1.1.1, 198.51.100.7, 10.0.0.5')).toBe('198.51.100.7');
    expect(p.clientAddress('192.0.2.1', '10.0.0.5')).toBe('192.0.2.1'); // not a proxy: its header is not believed
    expect(p.clientAddress('127.0.0.1', 'garbage')).toBe('127.0.0.1');
    expect(p.clientAddress('127.0.0.1', '[2001:db8::1]:443')).toBe('2001:db8::1');
    expect(() => new TrustedProxies(['10.0.0.0/33'])).toThrow(/not an IP address or CIDR/);
    expect(() => new TrustedProxies(['proxy.local'])).toThrow(/proxy\.local/);
  });

  for (const trusted of [true, false]) {
    it(`logs the ${trusted ? 'forwarded client' : 'peer'} address when the proxy is ${trusted ? '' : 'not '}trusted`, async () => {
      const log = recorder();
      const stack = await startTestStack({ plugins, logger: log, ...(trusted ? { env: { CAPSTAN_TRUSTED_PROXIES: '127.0.0.1' } } : {}) });
      try {
        const res = await fetch(`${stack.url}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.9' },
          body: '{"query":"{ whoami { role } }"}',
        });
        expect(res.status).toBe(401);
        const line = log.lines.find((l) => l.startsWith('request refused: no Authorization header'));
        expect(line).toContain(`"remote":"${trusted ? '203.0.113.9' : '127.0.0.1'}"`);
        // Loopback or proxied, GraphiQL and the console are pages without a token, not to be framed.
        for (const [path, title] of [
          ['/graphql', 'Capstan GraphiQL'],
          ['/console', ''],
        ] as const) {
          const page = await fetch(`${stack.url}${path}`, { headers: { accept: 'text/html', 'x-forwarded-for': '203.0.113.9' } });
          const html = await page.text();
          if (page.status === 503) continue; // the console is not built in this checkout
          expect(page.status, path).toBe(200);
          if (title) expect(html).toContain(title);
          expect(html).not.toContain(stack.adminToken);
          expect(html).not.toMatch(/cap_[A-Za-z0-9]/);
          expect(page.headers.get('content-security-policy'), path).toContain("frame-ancestors 'none'");
          expect(page.headers.get('x-frame-options'), path).toBe('DENY');
        }
      } finally {
        await stack.close();
      }
    });
  }
});
