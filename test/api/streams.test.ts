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

/** Opens a live run stream (SSE) and reads it in the background until it ends. */
function open(runId: string, token: string) {
  const controller = new AbortController();
  const started = Date.now();
  const done = (async () => {
    const res = await fetch(`${stack.url}/graphql`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: `subscription($id: ID!) { runEvents(runId: $id) { seq type } }`, variables: { id: runId } }),
    });
    const text = await res.text();
    return { text, seconds: (Date.now() - started) / 1000 };
  })();
  return { done, abort: () => controller.abort() };
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
    await new Promise((res) => setTimeout(res, 500));
    // A third stream for the same token is refused while two are open; another token is not affected.
    const third = await open(id, viewer).done;
    expect(third.text).toContain('FORBIDDEN');
    expect(third.text).toContain('already has 2 open subscriptions');
    const other = open(id, stack.adminToken);

    // Idle streams end on their own (2 s without events here) …
    const [ra, rb] = await Promise.all([a.done, b.done]);
    for (const x of [ra, rb]) {
      expect(x.text).toContain('RUN_PAUSED');
      expect(x.seconds).toBeGreaterThanOrEqual(2);
    }
    // … and give their slots back; so does a client that goes away (both slots taken, then dropped).
    const again = [open(id, viewer), open(id, viewer)];
    await new Promise((res) => setTimeout(res, 500));
    for (const x of again) x.abort();
    await Promise.all(again.map((x) => x.done.catch(() => undefined)));
    await new Promise((res) => setTimeout(res, 300));
    other.abort();
    await other.done.catch(() => undefined);
    const fourth = await open(id, viewer).done;
    expect(fourth.text).not.toContain('FORBIDDEN');
    expect(fourth.text).toContain('RUN_PAUSED');
  });
});
