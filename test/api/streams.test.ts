import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins, env: { CAPSTAN_MAX_SUBSCRIPTIONS: '2', CAPSTAN_STREAM_IDLE: '2s' } });
});
afterAll(async () => {
  await stack?.close();
});

/** An event of the stream (not an error), as the SSE `data:` line carries it. */
const EVENT = /"runEvents":\{"seq":\d+,"type":"[A-Z_]+"\}/;

/**
 * Opens a live run stream (SSE) and reads it in the background until it ends. `first` resolves
 * with what arrived up to the first event (the stream's slot is taken before its first event is
 * sent), or with whatever arrived if the stream ends or is aborted before one.
 */
function open(runId: string, token: string) {
  const controller = new AbortController();
  const started = Date.now();
  let text = '';
  let sawFirst: (text: string) => void = () => {};
  const first = new Promise<string>((resolve) => (sawFirst = resolve));
  const done = (async () => {
    try {
      const res = await fetch(`${stack.url}/graphql`, {
        method: 'POST',
        signal: controller.signal,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: `subscription($id: ID!) { runEvents(runId: $id) { seq type } }`, variables: { id: runId } }),
      });
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        text += decoder.decode(chunk.value, { stream: true });
        if (/^data: \{.*\n/m.test(text)) sawFirst(text);
      }
      return { text, seconds: (Date.now() - started) / 1000 };
    } finally {
      sawFirst(text);
    }
  })();
  return { done, first, abort: () => controller.abort() };
}

describe('live run streams', () => {
  it('are limited per token, close when idle, and give their slot back', async () => {
    // A run that pauses and then stays quiet: its stream has nothing more to say.
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: {
        name: 'quiet',
        stages: [
          { id: 'w', plugin: 'test:write-note' },
          { id: 's', plugin: 'test:shout', params: { alwaysFail: true }, retry: { maximumAttempts: 1 } },
        ],
      },
    });
    const id: string = r.data.startPipeline.id;
    await waitFor(
      async () => (await stack.gql(`query($id: ID!) { run(id: $id) { status } }`, { id })).data.run.status === 'PAUSED',
      'the run to pause',
      60_000,
    );

    const viewer = await stack.token('viewer', 'stream-viewer');
    const a = open(id, viewer);
    const b = open(id, viewer);
    // Both hold their slot once their first event has arrived.
    for (const x of [a, b]) expect(await x.first).toMatch(EVENT);
    // A third stream for the same token is refused while two are open; another token is not affected.
    const third = await open(id, viewer).done;
    expect(third.text).toContain('FORBIDDEN');
    expect(third.text).toContain('already has 2 open subscriptions');
    const other = open(id, stack.adminToken);
    const otherFirst = await other.first;
    expect(otherFirst).toMatch(EVENT);
    expect(otherFirst).not.toContain('FORBIDDEN');

    // Idle streams end on their own (2 s without events here) …
    const [ra, rb] = await Promise.all([a.done, b.done]);
    for (const x of [ra, rb]) {
      expect(x.text).toContain('RUN_PAUSED');
      expect(x.seconds).toBeGreaterThanOrEqual(2);
    }
    // … and give their slots back; so does a client that goes away. Two streams take both slots and
    // one of them is dropped: a new stream is accepted while the kept one is still open. Both had the
    // same events, so the idle limit would have ended them together: the slot came back because the
    // client went away, not because the idle limit ended the dropped stream.
    const [dropped, kept] = [open(id, viewer), open(id, viewer)];
    let keptEnded = false;
    kept.done.then(
      () => {
        keptEnded = true;
      },
      () => {
        keptEnded = true;
      },
    );
    for (const x of [dropped, kept]) expect(await x.first).toMatch(EVENT);
    dropped.abort();
    await dropped.done.catch(() => undefined);
    other.abort();
    await other.done.catch(() => undefined);
    let keptOpenWhenAccepted: boolean | undefined;
    const fourthStream = await waitFor(
      async () => {
        const s = open(id, viewer);
        if (!EVENT.test(await s.first)) {
          await s.done.catch(() => undefined);
          return undefined;
        }
        keptOpenWhenAccepted = !keptEnded;
        return s;
      },
      'a slot of the dropped stream to come back',
      10_000,
      25,
    );
    expect(keptOpenWhenAccepted, 'the slot came back only when the idle limit ended the streams').toBe(true);
    const fourth = await fourthStream.done;
    expect(fourth.text).not.toContain('FORBIDDEN');
    expect(fourth.text).toContain('RUN_PAUSED');
    kept.abort();
    await kept.done.catch(() => undefined);
  });
});
