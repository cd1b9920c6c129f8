// Finds fixed sleeps in test sources: an await of a timer that is not the pause of a polling loop.
// test/meta/no-fixed-sleeps.test.ts runs it over every test file.
//
// The rule is lexical (no type information), on the source with its comments, strings, template
// text and regular expressions blanked out, so code in them never counts:
//
//  1. A timer await is one of
//       await new Promise(…)   whose executor hands its resolve function to setTimeout — e.g.
//                              `await new Promise((r) => setTimeout(r, 500))`, `setTimeout(() => resolve(), 500)`
//                              (a timer that rejects, as a deadline for a wait on something else, is not one);
//       await sleep(…), await delay(…), await pause(…), await setTimeout(…), await x.setTimeout(…),
//       await scheduler.wait(…)   — the usual sleep helpers and node:timers/promises;
//       .waitForTimeout(…)   — playwright's fixed wait, awaited or not.
//     A timer that only bounds a wait on something else (`await Promise.race([exited, timeout])`)
//     is not one: the await is of the race.
//  2. It is fine inside a polling region: the header and body of a `for (…)`, `for await (…)`,
//     `while (…)` or `do { … }` loop (the body is its `{ … }` block, found by matching braces, or
//     the single statement up to its `;`), or the arguments of a `waitFor(…)` or `poll(…)` call
//     (test/helpers/stack.ts's waitFor, playwright's expect.poll), which call their function again
//     and again. The rule cannot tell a loop that re-tests a condition from one that does not: that
//     much is left to review.
//  3. Anywhere else it is reported, unless one of its lines carries `// fixed-sleep-ok: <why>` (a
//     non-empty reason): for a sleep that is the point, e.g. a lease or a window that has to
//     expire by time, an outage of a given length, or proof that something does not happen.

/** A fixed sleep: its 1-based line and that line's text. */
export interface FixedSleep {
  line: number;
  text: string;
}

const MARKER = /\/\/\s*fixed-sleep-ok:\s*\S/;
const PROMISE_AWAIT = /\bawait\s+new\s+Promise\s*(?:<[^>()]*>\s*)?\(/g;
const HELPER_AWAIT = /\bawait\s+(?:(?:[\w$]+\.)*(?:sleep|delay|pause|setTimeout)|scheduler\.wait)\s*\(/g;
const WAIT_FOR_TIMEOUT = /\.waitForTimeout\s*\(/g;
const LOOP = /\b(?:for|while)\s*(?:await\s*)?\(/g;
const DO = /\bdo\s*\{/g;
const POLL_CALL = /\b(?:waitFor|poll)\s*\(/g;
/** The executor's first parameter: `(r) =>`, `r =>`, `function (resolve`. */
const RESOLVE_PARAM = /^\s*(?:async\s*)?(?:function\s*[\w$]*\s*)?\(?\s*([\w$]+)/;
const escapeRe = (s: string) => s.replace(/[$]/g, '\\$&');
/** A setTimeout whose callback is the resolve function, or calls it first thing. */
const resolvesByTimer = (executor: string) => {
  const r = RESOLVE_PARAM.exec(executor)?.[1];
  if (!r) return false;
  const name = escapeRe(r);
  return new RegExp(`\\bsetTimeout\\s*\\(\\s*(?:${name}\\b|\\(\\s*\\)\\s*=>\\s*\\{?\\s*${name}\\s*\\()`).test(executor);
};

/** The fixed sleeps of one source file (see the rule above). */
export function findFixedSleeps(source: string): FixedSleep[] {
  const code = codeOnly(source);
  const regions = pollingRegions(code);
  const lineStarts = [0];
  for (let i = 0; i < source.length; i++) if (source[i] === '\n') lineStarts.push(i + 1);
  const lineOf = (offset: number) => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  const lines = source.split('\n');
  const found: FixedSleep[] = [];
  for (const [start, end] of timerAwaits(code)) {
    if (regions.some(([from, to]) => start >= from && start < to)) continue;
    const first = lineOf(start);
    const last = lineOf(end);
    if (lines.slice(first, last + 1).some((l) => MARKER.test(l))) continue;
    found.push({ line: first + 1, text: lines[first]!.trim() });
  }
  return found;
}

/** [start, end] offsets of every timer await in the code. */
function timerAwaits(code: string): [number, number][] {
  const spans: [number, number][] = [];
  for (const m of code.matchAll(PROMISE_AWAIT)) {
    const open = m.index + m[0].length - 1;
    const close = matching(code, open);
    if (resolvesByTimer(code.slice(open + 1, close))) spans.push([m.index, close]);
  }
  for (const re of [HELPER_AWAIT, WAIT_FOR_TIMEOUT]) {
    for (const m of code.matchAll(re)) {
      const open = m.index + m[0].length - 1;
      spans.push([m.index, matching(code, open)]);
    }
  }
  return spans.sort((a, b) => a[0] - b[0]);
}

/** [from, to) offsets of loop headers and bodies, and of the arguments of waitFor(…) and poll(…). */
function pollingRegions(code: string): [number, number][] {
  const regions: [number, number][] = [];
  for (const m of code.matchAll(LOOP)) {
    const headerEnd = matching(code, m.index + m[0].length - 1);
    let i = headerEnd + 1;
    while (i < code.length && /\s/.test(code[i]!)) i++;
    regions.push([m.index, code[i] === '{' ? matching(code, i) + 1 : statementEnd(code, i)]);
  }
  for (const m of code.matchAll(DO)) regions.push([m.index, matching(code, m.index + m[0].length - 1) + 1]);
  for (const m of code.matchAll(POLL_CALL)) regions.push([m.index, matching(code, m.index + m[0].length - 1) + 1]);
  return regions;
}

const OPENERS: Record<string, string> = { '(': ')', '[': ']', '{': '}' };

/** The offset of the bracket closing the one at `open` (the end of the code if it is never closed). */
function matching(code: string, open: number): number {
  const stack: string[] = [];
  for (let i = open; i < code.length; i++) {
    const c = code[i]!;
    if (OPENERS[c]) stack.push(OPENERS[c]);
    else if (c === ')' || c === ']' || c === '}') {
      stack.pop();
      if (stack.length === 0) return i;
    }
  }
  return code.length;
}

/** The end (exclusive) of the statement starting at `from`: its `;` outside brackets, or the bracket that closes around it. */
function statementEnd(code: string, from: number): number {
  let depth = 0;
  for (let i = from; i < code.length; i++) {
    const c = code[i]!;
    if (OPENERS[c]) depth++;
    else if (c === ')' || c === ']' || c === '}') {
      if (depth === 0) return i;
      depth--;
    } else if (c === ';' && depth === 0) return i + 1;
  }
  return code.length;
}

/**
 * The source with comments, string and template text and regular expression literals replaced by
 * spaces (line breaks kept, so offsets and lines stay where they were); the code inside a
 * template's `${…}` is kept. A `/` starts a regular expression where an operand is expected.
 */
export function codeOnly(source: string): string {
  const out = source.split('');
  const blank = (from: number, to: number) => {
    for (let k = from; k < to && k < out.length; k++) if (out[k] !== '\n') out[k] = ' ';
  };
  /** For each template literal we are in the `${…}` code of: the depth of braces opened in that code. */
  const templates: number[] = [];
  let lastSignificant = '';
  let lastWord = '';
  let i = 0;
  const n = source.length;
  /** Blanks template text from i (just after a backtick or a closing `}`) to its end or its next `${`. */
  const templateText = () => {
    const start = i;
    while (i < n) {
      const c = source[i]!;
      if (c === '\\') i += 2;
      else if (c === '`') {
        blank(start, i + 1);
        i++;
        lastSignificant = '`';
        return;
      } else if (c === '$' && source[i + 1] === '{') {
        blank(start, i);
        i += 2;
        templates.push(0);
        lastSignificant = '{';
        return;
      } else i++;
    }
    blank(start, n);
  };
  while (i < n) {
    const c = source[i]!;
    const next = source[i + 1];
    if (c === '/' && next === '/') {
      const end = source.indexOf('\n', i);
      blank(i, end === -1 ? n : end);
      i = end === -1 ? n : end;
    } else if (c === '/' && next === '*') {
      const end = source.indexOf('*/', i + 2);
      blank(i, end === -1 ? n : end + 2);
      i = end === -1 ? n : end + 2;
    } else if (c === "'" || c === '"') {
      const start = i++;
      while (i < n && source[i] !== c && source[i] !== '\n') i += source[i] === '\\' ? 2 : 1;
      blank(start, i + 1);
      i++;
      lastSignificant = c;
    } else if (c === '`') {
      i++;
      templateText();
    } else if (c === '/' && operandExpected(lastSignificant, lastWord)) {
      const start = i++;
      let inClass = false;
      while (i < n && source[i] !== '\n') {
        const d = source[i]!;
        if (d === '\\') i++;
        else if (d === '[') inClass = true;
        else if (d === ']') inClass = false;
        else if (d === '/' && !inClass) break;
        i++;
      }
      i++;
      while (i < n && /[a-z]/i.test(source[i]!)) i++;
      blank(start, i);
      lastSignificant = '/';
      lastWord = '';
    } else if (c === '{' && templates.length) {
      templates[templates.length - 1]!++;
      lastSignificant = c;
      i++;
    } else if (c === '}' && templates.length && templates[templates.length - 1] === 0) {
      templates.pop();
      i++;
      templateText();
    } else {
      if (c === '}' && templates.length) templates[templates.length - 1]!--;
      if (/[\w$]/.test(c)) {
        let j = i;
        while (j < n && /[\w$]/.test(source[j]!)) j++;
        lastWord = source.slice(i, j);
        lastSignificant = 'w';
        i = j;
        continue;
      }
      if (!/\s/.test(c)) {
        lastSignificant = c;
        lastWord = '';
      }
      i++;
    }
  }
  return out.join('');
}

const OPERAND_AFTER_WORD = new Set(['return', 'typeof', 'case', 'of', 'in', 'do', 'else', 'void', 'yield', 'await', 'throw', 'new', 'delete']);

/** Whether a `/` here starts a regular expression (an operand is expected) rather than being a division. */
function operandExpected(lastSignificant: string, lastWord: string): boolean {
  if (lastSignificant === '') return true;
  if (lastSignificant === 'w') return OPERAND_AFTER_WORD.has(lastWord);
  return !/[)\]}'"`/]/.test(lastSignificant);
}
