import path from 'node:path';
import type { Browser } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { plugins } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
let browser: Browser;
beforeAll(async () => {
  stack = await startTestStack({ plugins });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

describe('Temporal Web UI', () => {
  it('finds a run by pipeline name and shows its status, summary and stage activities', async () => {
    const name = `ui-check-${Date.now().toString(36)}`;
    const r = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, {
      s: {
        name,
        stages: [
          { id: 'write', plugin: 'test:write-note' },
          { id: 'shout', plugin: 'test:shout' },
        ],
      },
    });
    const id: string = r.data.startPipeline.id;
    await waitFor(
      async () => (await stack.client.workflow.count(`CapstanPipeline = '${name}' AND ExecutionStatus = 'Completed'`)).count === 1,
      'run to complete',
      60_000,
    );

    const ui = inject('temporalUiUrl');
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    // The list, filtered by the pipeline-name search attribute.
    const query = encodeURIComponent(`CapstanPipeline="${name}"`);
    await page.goto(`${ui}/namespaces/default/workflows?query=${query}`);
    const row = page.getByText(id, { exact: true }).first();
    await row.waitFor({ timeout: 30_000 });
    await page.screenshot({ path: path.join(stack.dataDir, 'temporal-ui-list.png') });
    const table = await page.locator('body').innerText();
    expect(table).toContain(id);
    expect(table).toMatch(/COMPLETED/i);
    expect(table).toContain(`CapstanPipeline = "${name}"`);

    // The run's own page: summary written at start, and the stage activities with their plugin.
    await page.goto(`${ui}/namespaces/default/workflows/${encodeURIComponent(id)}/${(await stack.client.workflow.getHandle(id).describe()).runId}/history`);
    await page.getByText(`${name}: write → shout`).first().waitFor({ timeout: 30_000 });
    const detail = await page.locator('body').innerText();
    await page.screenshot({ path: path.join(stack.dataDir, 'temporal-ui-run.png'), fullPage: true });
    expect(detail).toMatch(/COMPLETED/i);
    // Each stage activity carries a summary naming the plugin it runs.
    expect(detail).toContain('write: test:write-note@1.0.0');
    expect(detail).toContain('shout: test:shout@1.0.0');
  });
});
