import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { freePort, startDevServer, type DevServer } from '../../dev/dev-server.js';
import { silentLogger } from '../../lib/logger.js';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let server: DevServer | undefined;
let stack: TestStack | undefined;
afterAll(async () => {
  await stack?.close();
  await server?.stop();
});

describe('the Temporal server restarts mid-run', () => {
  it('stopping and starting the dev server on the same database file loses no run', { timeout: 240_000 }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-restart-'));
    const port = await freePort();
    const start = () => startDevServer({ cliPath: inject('temporalCliPath'), dbFile: path.join(dir, 'temporal.db'), port, logger: silentLogger });
    server = await start();
    stack = await startTestStack({ plugins, temporalAddress: server.address });
    const spec = (name: string) => ({
      name,
      stages: [
        { id: 'w', plugin: 'test:write-note', params: { text: name } },
        // Long enough that the server goes away while it runs; heartbeats keep it honest.
        { id: 'wait', plugin: 'test:wait', params: { ms: 6000 }, needs: ['w'], timeouts: { heartbeat: '5s' } },
        { id: 's', plugin: 'test:shout', needs: ['w', 'wait'] },
      ],
    });
    const ids: string[] = [];
    for (const name of ['restart-a', 'restart-b'])
      ids.push((await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec(name) })).data.startPipeline.id);
    const q = `query($id: ID!) { run(id: $id) { status stages { id status } } }`;
    await waitFor(async () => (await stack!.gql(q, { id: ids[0] })).data.run.stages[1].status === 'RUNNING', 'the wait stage to run', 60_000);

    // The server goes away for a few seconds, then comes back on the same file and port.
    await server.stop();
    await new Promise((r) => setTimeout(r, 4000)); // fixed-sleep-ok: the outage itself: the server stays down this long
    server = await start();

    const runs = await Promise.all(
      ids.map((id) =>
        waitFor(
          async () => {
            const run = (await stack!.gql(q, { id })).data?.run;
            return run && !['RUNNING', 'PAUSED'].includes(run.status) ? run : undefined;
          },
          `${id} to close`,
          180_000,
          500,
        ),
      ),
    );
    const completed = runs.filter((r) => r.status === 'COMPLETED').length;
    console.info(`[temporal-restart] runs started ${ids.length}, completed ${completed}, lost ${ids.length - completed}`);
    expect(runs.map((r) => r.status)).toEqual(['COMPLETED', 'COMPLETED']);
    for (const r of runs) expect(r.stages.map((s: { status: string }) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
  });
});
