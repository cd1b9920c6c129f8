// The console in a real browser (headless Chromium over real HTTP): sign in with a token, a
// completed MNIST run's timeline (one bar per stage attempt) and curves (one point per epoch), a
// paused run retried from the form with corrected params, promote and roll back, a drawn digit
// predicted; a viewer sees no decision or promotion controls and the API refuses them anyway.
// Screenshots go to test-results/console/ (not tracked).
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import { shoutStage, writeNoteStage } from '../fixtures/plugins/test-stages.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SHOTS = path.join(ROOT, 'test-results/console');
const EPOCHS = 3;
const MODEL = `console-mnist-${Date.now().toString(36)}`;

let stack: TestStack;
let browser: Browser;
const mnistRuns: string[] = [];
let pausedRun: string;
const errors: string[] = [];

/** Version 1 deploys as a tfjs layers folder, version 2 (seed 8) converted to ONNX. */
const mnistSpec = (seed: number) => ({
  name: 'console-mnist',
  stages: [
    { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 1500, seed } },
    { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: EPOCHS, batchSize: 64, seed } },
    {
      id: 'deploy',
      plugin: 'core:deploy',
      needs: ['data', 'pretrain'],
      params: { modelName: MODEL, latencyRuns: 20, gates: { minTestAccuracy: 0.3 }, ...(seed === 8 ? { format: 'onnx' } : {}) },
    },
    { id: 'ledger', plugin: 'core:roi-ledger', params: { revenue: { kind: 'contract', value: '100.00' } } },
  ],
});

/** The page reads the API again after every change; under a loaded suite that can take a while. */
const POLL = { timeout: 60_000, interval: 250 };

const START = 'mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }';

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  stack = await startTestStack({ plugins: [dataPrepStage(), pretrainStage(), deployStage(), roiLedgerStage(), writeNoteStage, shoutStage] });
  // One after the other, so versions are 1 and 2 in run order. Version 2 (another seed) may measure
  // below version 1: the model is opted out of champion/challenger so it is promoted all the same.
  const optOut = await stack.gql('mutation($n: String!) { setModelPromotionPolicy(name: $n, requireChampionChallenger: false) { name } }', { n: MODEL });
  if (optOut.errors) throw new Error(JSON.stringify(optOut.errors));
  for (const seed of [7, 8]) {
    const r = await stack.gql(START, { s: mnistSpec(seed) });
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    const id: string = r.data.startPipeline.id;
    mnistRuns.push(id);
    await waitFor(
      async () => (await stack.gql('query($id: ID!) { run(id: $id) { status } }', { id })).data.run.status === 'COMPLETED',
      `MNIST run ${id} to complete`,
      240_000,
      500,
    );
  }
  const p = await stack.gql(START, {
    s: {
      name: 'console-pause',
      stages: [
        { id: 'write', plugin: 'test:write-note' },
        { id: 'shout', plugin: 'test:shout', params: { alwaysFail: true } },
      ],
    },
  });
  pausedRun = p.data.startPipeline.id;
  await waitFor(
    async () => (await stack.gql('query($id: ID!) { run(id: $id) { status } }', { id: pausedRun })).data.run.status === 'PAUSED',
    'run to pause',
    60_000,
  );
  browser = await launchChromium();
}, 600_000);
afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

/** A page signed in through the form with this token; every request it makes must go to the API. */
async function signedIn(token: string, viewport = { width: 1280, height: 800 }): Promise<Page> {
  const page = await browser.newPage({ viewport });
  page.setDefaultTimeout(90_000);
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(stack.url) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) errors.push(`request left the API: ${r.url()}`);
  });
  await page.goto(`${stack.url}/console`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('whoami').waitFor();
  return page;
}

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

describe('the console', () => {
  it('is served by the API: hashed assets cached for a year, HTML revalidated with a CSP, under 300 kB gzipped, no auth needed for the page', async () => {
    const html = await fetch(`${stack.url}/console`);
    expect(html.status).toBe(200);
    expect(html.headers.get('cache-control')).toBe('no-cache');
    expect(html.headers.get('content-security-policy')).toContain("script-src 'self'");
    const body = await html.text();
    const js = /assets\/(console-[A-Z0-9]+\.js)/.exec(body)![1]!;
    const asset = await fetch(`${stack.url}/console/assets/${js}`);
    expect(asset.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(asset.headers.get('content-type')).toContain('javascript');
    expect((await fetch(`${stack.url}/console/assets/..%2F..%2Fpackage.json`)).status).toBe(404);
    // The Host allowlist still applies (a DNS-rebinding name gets 421).
    const rebound = await new Promise<number>((resolve, reject) =>
      httpRequest(`${stack.url}/console`, { headers: { host: 'evil.example' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      })
        .on('error', reject)
        .end(),
    );
    expect(rebound).toBe(421);
    const dist = path.join(ROOT, 'console/dist');
    const files = ['index.html', ...readdirSync(path.join(dist, 'assets')).map((f) => `assets/${f}`)];
    const gz = files.reduce((n, f) => n + gzipSync(readFileSync(path.join(dist, f)), { level: 9 }).length, 0);
    console.info(`[console] ${files.length} files, ${(gz / 1024).toFixed(1)} kB gzipped`);
    expect(gz).toBeLessThan(300 * 1024);
  });

  it('signs in with a token, lists runs, and draws a completed MNIST run: one bar per stage attempt, one point per epoch', async () => {
    const page = await signedIn(stack.adminToken);
    // The dev server is shared with every other test file: filter the list to this pipeline.
    await page.getByLabel('Pipeline').fill('console-mnist');
    await page.getByLabel('Pipeline').press('Enter');
    await page.getByTestId('runs-table').getByRole('link', { name: mnistRuns[0]! }).waitFor();
    await expect.poll(() => page.getByTestId('runs-table').locator('tbody tr').count(), POLL).toBe(2);
    await shot(page, 'runs');
    await page.getByTestId('runs-table').getByRole('link', { name: mnistRuns[0]! }).click();
    await page.getByTestId('run-status').getByText('completed').waitFor();
    const api = (
      await stack.gql('query($id: ID!) { run(id: $id) { stages { id attemptHistory { attempt } epochs { epoch trainLoss valAccuracy } } } }', {
        id: mnistRuns[0],
      })
    ).data.run;
    const attempts = api.stages.reduce((n: number, s: { attemptHistory: unknown[] }) => n + s.attemptHistory.length, 0);
    expect(attempts).toBe(4); // data, pretrain, deploy, ledger: one attempt each
    await expect.poll(() => page.getByTestId('attempt-bar').count(), POLL).toBe(attempts);
    const pretrain = api.stages.find((s: { id: string }) => s.id === 'pretrain');
    expect(pretrain.epochs.map((e: { epoch: number }) => e.epoch)).toEqual([1, 2, 3]);
    expect(pretrain.epochs.every((e: { trainLoss: number; valAccuracy: number }) => e.trainLoss > 0 && e.valAccuracy > 0)).toBe(true);
    const curves = page.getByTestId('curves-pretrain');
    await expect.poll(() => curves.getByTestId('loss-chart').getAttribute('data-points'), POLL).toBe(String(EPOCHS));
    expect(await curves.getByTestId('accuracy-chart').getAttribute('data-points')).toBe(String(EPOCHS));
    expect(await curves.locator('canvas').count()).toBe(2);
    // The stage table: params, metrics and artifacts (kind, size, hash).
    const table = page.getByTestId('stage-table');
    expect(await table.innerText()).toMatch(/model\s+[\d.]+ kB/);
    expect(await page.getByTestId('temporal-link').getAttribute('href')).toContain(encodeURIComponent(mnistRuns[0]!));
    await shot(page, 'run');
    await page.screenshot({ path: path.join(SHOTS, 'run.jpg'), type: 'jpeg', quality: 60, fullPage: true }); // the README's picture (docs/console-run.jpg)
    // A narrow window: the same page, still usable.
    await page.setViewportSize({ width: 390, height: 800 });
    await page.getByRole('navigation', { name: 'Console pages' }).getByRole('link', { name: 'Models' }).waitFor();
    await shot(page, 'run-narrow');
    await page.close();
  });

  it('pauses a run with a failing stage, refuses bad params in the form, retries with corrected params and completes', async () => {
    const page = await signedIn(stack.adminToken);
    await page.goto(`${stack.url}/console#/runs/${encodeURIComponent(pausedRun)}`);
    const form = page.getByTestId('decision-shout');
    await form.waitFor();
    await expect.poll(() => page.getByTestId('attempt-bar').count(), POLL).toBe(4); // write + three failed shout attempts
    expect(await page.getByTestId('pause-bar').count()).toBe(1);
    await shot(page, 'run-paused');
    const params = form.getByLabel(/Params for the retry/);
    await params.fill('{ "alwaysFail": false, "suffix": "far too long" }');
    await form.getByTestId('param-issues').getByText('params.suffix').waitFor();
    expect(await form.getByRole('button', { name: 'Retry with these params' }).isDisabled()).toBe(true);
    await params.fill('{ "alwaysFail": false, "suffix": "!" }');
    await expect.poll(() => form.getByTestId('param-issues').locator('li').count(), POLL).toBe(0);
    await form.getByRole('button', { name: 'Retry with these params' }).click();
    await page.getByTestId('run-status').getByText('completed').waitFor({ timeout: 60_000 });
    await expect.poll(() => page.getByTestId('attempt-bar').count(), POLL).toBe(5);
    expect(await page.locator('[data-testid="attempt-bar"][data-kind="FAILED"]').count()).toBe(3);
    await shot(page, 'run-retried');
    const run = (
      await stack.gql('query($id: ID!) { run(id: $id) { status stages { id params attemptHistory { round attempt outcome } } } }', { id: pausedRun })
    ).data.run;
    expect(run.status).toBe('COMPLETED');
    const shout = run.stages.find((s: { id: string }) => s.id === 'shout');
    expect(shout.params).toEqual({ alwaysFail: false, suffix: '!' });
    expect(shout.attemptHistory.at(-1)).toEqual({ round: 1, attempt: 1, outcome: 'SUCCEEDED' });
    await page.close();
  });

  it('promotes and rolls back a model with its gate results and formats shown, and predicts a drawn digit with either format', async () => {
    const page = await signedIn(stack.adminToken);
    await page.goto(`${stack.url}/console#/models`);
    const model = page.getByTestId(`model-${MODEL}`);
    await model.waitFor();
    const prod = model.getByTestId('production-version');
    await expect.poll(() => prod.innerText(), POLL).toBe('v2');
    expect(await model.innerText()).toContain('minTestAccuracy');
    expect(await model.locator('tr[data-version="2"] [data-testid="format"]').innerText()).toMatch(/^ONNX\s+onnxruntime-node 1\.30\.0 \(cpu\)$/);
    expect(await model.locator('tr[data-version="1"] [data-testid="format"]').innerText()).toMatch(/^tfjs layers\s+tfjs 4\.22\.0 \(/);
    // Draw a "1": a vertical stroke in the middle of the canvas.
    const canvas = model.getByTestId('try-it').locator('canvas');
    const drawOne = async () => {
      const box = (await canvas.boundingBox())!;
      await page.mouse.move(box.x + box.width / 2, box.y + box.height * 0.2);
      await page.mouse.down();
      for (let i = 1; i <= 12; i++) await page.mouse.move(box.x + box.width / 2, box.y + box.height * (0.2 + (0.6 * i) / 12));
      await page.mouse.up();
    };
    const predicted = async (version: string) => {
      await model.getByTestId('predict').click();
      await expect.poll(() => model.getByTestId('prediction-version').innerText(), POLL).toBe(version);
      return model.getByTestId('prediction').innerText();
    };
    await drawOne();
    const byOnnx = await predicted('v2, ONNX');
    expect(byOnnx).toMatch(/^[0-9]$/);
    await model.getByRole('button', { name: 'Roll back to v1' }).click();
    await expect.poll(() => prod.innerText(), POLL).toBe('v1');
    await expect.poll(() => model.getByTestId('serving').innerText(), POLL).toMatch(/^v1 on tfjs 4\.22\.0/);
    const byTfjs = await predicted('v1, tfjs layers');
    expect(byTfjs).toMatch(/^[0-9]$/);
    await model.getByRole('button', { name: 'Promote v2' }).click();
    await expect.poll(() => prod.innerText(), POLL).toBe('v2');
    await expect.poll(() => model.getByTestId('serving').innerText(), POLL).toBe('v2 on onnxruntime-node 1.30.0 (cpu)');
    const history = (await stack.gql('query($n: String!) { model(name: $n) { productionHistory { version reason } } }', { n: MODEL })).data.model
      .productionHistory;
    expect(history.map((h: { version: number; reason: string }) => `${h.version} ${h.reason.split(' ')[0]}`).slice(-2)).toEqual(['1 rollback', '2 promote']);
    expect(await predicted('v2, ONNX')).toBe(byOnnx);
    await shot(page, 'models');
    await page.goto(`${stack.url}/console#/pipelines`);
    await page.getByTestId('stacked-bars').waitFor();
    expect(await page.getByTestId('pipeline-totals').innerText()).toMatch(/Runs\s+2/);
    await shot(page, 'pipelines');
    await page.close();
  });

  it('shows a viewer no decision or promotion controls, and the API refuses them anyway', async () => {
    const viewer = await stack.token('viewer', 'console-viewer');
    // Pause another run so a decision would be possible.
    const p = await stack.gql(START, {
      s: {
        name: 'console-pause',
        stages: [
          { id: 'write', plugin: 'test:write-note' },
          { id: 'shout', plugin: 'test:shout', params: { alwaysFail: true } },
        ],
      },
    });
    const id: string = p.data.startPipeline.id;
    await waitFor(async () => (await stack.gql('query($id: ID!) { run(id: $id) { status } }', { id })).data.run.status === 'PAUSED', 'run to pause', 60_000);
    const page = await signedIn(viewer);
    expect(await page.getByTestId('whoami').innerText()).toContain('viewer');
    await page.goto(`${stack.url}/console#/runs/${encodeURIComponent(id)}`);
    await page.getByTestId('run-status').getByText('paused').waitFor();
    await page.getByTestId('stage-table').waitFor();
    expect(await page.locator('[data-testid^="decision-"]').count()).toBe(0);
    expect(await page.getByRole('button', { name: /Retry|Skip|Abort|Cancel/ }).count()).toBe(0);
    await page.goto(`${stack.url}/console#/models`);
    await page.getByTestId(`model-${MODEL}`).waitFor();
    expect(await page.getByTestId('promote').count()).toBe(0);
    expect(await page.getByTestId('rollback').count()).toBe(0);
    expect(await page.getByTestId('try-it').count()).toBe(0); // viewers cannot predict
    await shot(page, 'models-viewer');
    // The API refuses them anyway.
    const retry = await stack.gql('mutation($id: ID!) { retryStage(runId: $id, stageId: "shout", params: { alwaysFail: false }) { id } }', { id }, viewer);
    expect(retry.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const promote = await stack.gql('mutation($n: String!) { promoteModel(name: $n, version: 1) { name } }', { n: MODEL }, viewer);
    expect(promote.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await stack.gql('query($id: ID!) { run(id: $id) { status } }', { id })).data.run.status).toBe('PAUSED');
    await stack.gql('mutation($id: ID!) { abortRun(runId: $id, reason: "test over") { id } }', { id });
    await page.close();
  });

  it('made no request outside the API and raised no page errors', () => {
    expect(errors).toEqual([]);
  });
});
