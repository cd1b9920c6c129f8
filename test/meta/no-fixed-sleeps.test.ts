// Tests wait on conditions, not time: no test file awaits a fixed sleep outside a polling loop
// unless the line says why (`// fixed-sleep-ok: <why>`). The rule is test/helpers/fixed-sleeps.ts's.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { findFixedSleeps } from '../helpers/fixed-sleeps.js';

const SELF = fileURLToPath(import.meta.url);
const TESTS = path.resolve(path.dirname(SELF), '..');
const ROOT = path.resolve(TESTS, '..');

const lines = (...l: string[]) => l.join('\n');
const flagged = (source: string) => findFixedSleeps(source).map((s) => s.line);

describe('the fixed-sleep scanner', () => {
  it('flags a bare timer await, in each of its forms, naming its line', () => {
    const bare = lines(
      "it('streams the run', async () => {",
      '  const s = open(id);',
      '  await new Promise((r) => setTimeout(r, 500));',
      "  expect(s.events).toContain('RUN_PAUSED');",
      '});',
    );
    expect(findFixedSleeps(bare)).toEqual([{ line: 3, text: 'await new Promise((r) => setTimeout(r, 500));' }]);
    expect(
      flagged(
        lines(
          'await sleep(2500);',
          "import { setTimeout } from 'node:timers/promises';",
          'await setTimeout(100);',
          'await timers.setTimeout(100);',
          'await scheduler.wait(100);',
          'await page.waitForTimeout(300);',
          'await new Promise<void>((resolve) =>',
          '  setTimeout(resolve, 500),',
          ');',
          'if (slow) await delay(1000);',
          'await new Promise(function (resolve) { setTimeout(() => resolve(), 200); });',
        ),
      ),
    ).toEqual([1, 3, 4, 5, 6, 7, 10, 11]);
    // Brace matching: a loop that has closed does not cover the sleep after it; a marker needs a reason.
    expect(
      flagged(lines('for (const x of xs) {', '  n += x;', '}', 'await sleep(100);', 'while (n < 3) n++;', 'await sleep(100); // fixed-sleep-ok:')),
    ).toEqual([4, 6]);
  });

  it('passes polling loops, waitFor and expect.poll, marked sleeps, and timers that are not awaited sleeps', () => {
    const fine = lines(
      'while (!(await done())) {',
      '  const n = await count();',
      '  if (n > 3) break;',
      '  await new Promise((r) => setTimeout(r, 50));',
      '}',
      'for (let i = 0; i < 200 && (await pending()) > 0; i++) await new Promise((r) => setTimeout(r, 20));',
      'do {',
      '  await sleep(25);',
      '} while (!(await ready()));',
      'for (;;) {',
      '  if (await ready()) break;',
      // (a template literal with a placeholder, in the sample's source)
      '  if (Date.now() > deadline) throw new Error(`timed out: $' + '{what} after {n} s`);',
      '  const { every } = await settings();',
      '  await new Promise((r) => setTimeout(r, every));',
      '}',
      'await waitFor(async () => {',
      '  await sleep(10);',
      '  return (await status()) === "DONE";',
      "}, 'the run to finish');",
      'await expect.poll(async () => { await sleep(10); return count(); }).toBe(1);',
      'await new Promise((r) => setTimeout(r, 2100)); // fixed-sleep-ok: the window has to pass',
      'await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);',
      "const answer = await new Promise((resolve, reject) => { req.on('response', resolve); setTimeout(() => reject(new Error('no answer')), 10_000); });",
      'const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));',
      'setTimeout(() => ac.abort(), 500);',
      '// await new Promise((r) => setTimeout(r, 500));',
      "const s = 'await sleep(500)';",
      'const t = `await new Promise((r) => setTimeout(r, $' + '{ms}))`;',
      'const re = /await sleep\\(\\d+\\)/;',
      'const half = total / 2; const third = total / 3;',
      'await waitForEvent();',
    );
    expect(findFixedSleeps(fine)).toEqual([]);
  });
});

describe('the test files', () => {
  it('await no fixed sleep outside a polling loop unless the line says why', () => {
    const files = readdirSync(TESTS, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.split(path.sep).includes('node_modules'))
      .map((f) => path.join(TESTS, f))
      .filter((f) => f !== SELF);
    // The scan reaches the suite (this folder's sibling folders), not just a few files.
    expect(files.length).toBeGreaterThan(80);
    expect(files).toContain(path.join(TESTS, 'api', 'streams.test.ts'));
    const found = files.flatMap((f) => findFixedSleeps(readFileSync(f, 'utf8')).map((s) => `${path.relative(ROOT, f)}:${s.line}: ${s.text}`));
    expect(
      found,
      'fixed sleeps: wait for the condition instead (waitFor in test/helpers/stack.ts, a polling loop, expect.poll, locator.waitFor), or end the line with `// fixed-sleep-ok: <why>`',
    ).toEqual([]);
  });
});
