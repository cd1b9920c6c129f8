import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError } from '../../ml/data/data-error.js';
import { parseCsv, parseCsvStream } from '../../ml/data/csv.js';
import { buildDataset, readDataset, splitIndices, writeDataset } from '../../ml/data/dataset.js';
import { encodeIdx, parseIdx, parseIdxLabels, readIdxFile, readIdxPair } from '../../ml/data/idx.js';
import { ApplicationFailure } from '@temporalio/common';
import { dataPrepStage, mnistFiles, mnistPackageDir } from '../../plugins/core/data-prep/index.js';
import { dispatch, makeContext, tmpStore } from './helpers.js';

let store: Awaited<ReturnType<typeof tmpStore>>;
beforeAll(async () => {
  store = await tmpStore();
});
afterAll(async () => {
  await store.cleanup();
});

function expectDataError(fn: () => unknown, code: string, text: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    expect((e as DataError).code).toBe(code);
    expect((e as Error).message).toMatch(text);
    return;
  }
  throw new Error('expected a DataError');
}

describe('IDX parser', () => {
  it('reads the real MNIST headers', async () => {
    const f = mnistFiles();
    const { images, labels } = await readIdxPair({ images: f.testImages, labels: f.testLabels });
    expect([images.count, images.rows, images.cols]).toEqual([10000, 28, 28]);
    expect(labels.count).toBe(10000);
    expect(Math.max(...labels.labels)).toBe(9);
  });

  it('rejects a bad magic number, a truncated payload, the wrong rank and out-of-range labels', () => {
    const good = encodeIdx([2, 2, 2], new Uint8Array(8));
    expect(parseIdx(good, { file: 'x', expectDims: 3 }).dims).toEqual([2, 2, 2]);
    const badMagic = good.slice();
    badMagic[0] = 0x1f;
    // Says what is wrong and what was expected, never the file's bytes (the first bytes of whatever file was named).
    expectDataError(
      () => parseIdx(badMagic, { file: 'imgs.idx' }),
      'DATA_CORRUPT',
      /^imgs\.idx: not an IDX file: bad magic number \(expected 0x0000 then the element type and the rank\)$/,
    );
    expectDataError(
      () => parseIdx(Buffer.from('root:x:0:0:root'), { file: 'p', expectDims: 3 }),
      'DATA_CORRUPT',
      /^p: not an IDX file: bad magic number \(expected 0x00000803 \(unsigned bytes, 3 dimensions\)\)$/,
    );
    expectDataError(
      () => parseIdx(Uint8Array.from([0, 0, 0x72, 1, 0, 0, 0, 1, 9]), { file: 'l', expectDims: 1 }),
      'DATA_CORRUPT',
      /^l: not an IDX file: bad magic number, unknown element type \(expected 0x00000801 \(unsigned bytes, 1 dimension\)\)$/,
    );
    expectDataError(() => parseIdx(good.subarray(0, good.length - 3), { file: 'imgs.idx' }), 'DATA_CORRUPT', /truncated: .*need 8 data bytes, file has 5/);
    expectDataError(() => parseIdx(good, { file: 'imgs.idx', expectDims: 1 }), 'DATA_CORRUPT', /expected 1 dimension/);
    const labels = encodeIdx([3], Uint8Array.from([1, 12, 3]));
    expectDataError(() => parseIdxLabels(labels, 'l.idx', 10), 'DATA_CORRUPT', /l\.idx: label 12 at index 1 is outside 0\.\.9/);
  });

  it('checks the sizes a file header declares against the file before allocating', async () => {
    // A 20-byte file claiming 2^31-1 × 2^31-1 × 2^31-1 images: refused from the header alone.
    const huge = new Uint8Array(20);
    huge.set([0, 0, 8, 3]);
    const v = new DataView(huge.buffer);
    for (let i = 0; i < 3; i++) v.setUint32(4 + 4 * i, 0x7fffffff, false);
    const file = path.join(store.root, 'huge-header.idx');
    await writeFile(file, huge);
    await expect(readIdxFile(file, { expectDims: 3 })).rejects.toThrow(
      /huge-header\.idx: truncated: header dimensions \[2147483647×2147483647×2147483647\] need \d+ data bytes, file has 4/,
    );
    const good = path.join(store.root, 'good.idx');
    await writeFile(good, encodeIdx([2, 3], Uint8Array.from([1, 2, 3, 4, 5, 6])));
    expect(await readIdxFile(good, { expectDims: 2 })).toEqual({ dims: [2, 3], data: Uint8Array.from([1, 2, 3, 4, 5, 6]) });
    const trailing = path.join(store.root, 'trailing.idx');
    await writeFile(trailing, Buffer.concat([encodeIdx([2], Uint8Array.from([1, 2])), Buffer.from([9])]));
    await expect(readIdxFile(trailing)).rejects.toThrow(/has trailing bytes/);
  });
});

describe('CSV parser', () => {
  it('reads labels and features and rejects NaN with row and column named', () => {
    const t = parseCsv('a,label,b\n1,0,2\n3,1,4\n', { file: 'f.csv', labelColumn: 'label' });
    expect(t.featureColumns).toEqual(['a', 'b']);
    expect(Array.from(t.features)).toEqual([1, 2, 3, 4]);
    expect(Array.from(t.labels)).toEqual([0, 1]);
    expect(t.numClasses).toBe(2);
    expectDataError(
      () => parseCsv('a,label\n1,0\nNaN,1\n', { file: 'f.csv', labelColumn: 'label' }),
      'DATA_CORRUPT',
      /^f\.csv: line 3, column 1: not a finite number$/,
    );
    expectDataError(() => parseCsv('a,label\n1,0\n\n,1\n', { file: 'f.csv', labelColumn: 1 }), 'DATA_CORRUPT', /line 4, column 1: empty cell/);
    expectDataError(
      () => parseCsv('a,label\n1,0.5\n', { file: 'f.csv', labelColumn: 'label' }),
      'DATA_CORRUPT',
      /line 2, column 2: the label is not an integer class in 0\.\.255/,
    );
    expectDataError(
      () => parseCsv('a,b\n1,0\n', { file: 'f.csv', labelColumn: 'label' }),
      'DATA_MISMATCH',
      /^f\.csv: label column "label" not found in the header \(line 1, 2 columns\)$/,
    );
  });

  it('never echoes the text of the file in its errors', () => {
    const passwd = 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n';
    for (const labelColumn of ['zz', 0] as const) {
      try {
        parseCsv(passwd, { file: '/etc/passwd', labelColumn });
        throw new Error('expected a DataError');
      } catch (e) {
        expect(e).toBeInstanceOf(DataError);
        expect((e as Error).message).not.toMatch(/root|daemon|bash|nologin/);
      }
    }
    const cells = 'a,label\n1,0\nsecret-cell,1\n';
    expect(() => parseCsv(cells, { file: 'f.csv', labelColumn: 'label' })).toThrow(/^f\.csv: line 3, column 1: not a finite number$/);
    expect(() => parseCsv('a,label\n1,secret\n', { file: 'f.csv', labelColumn: 'label' })).toThrow(/^f\.csv: line 2, column 2: not a finite number$/);
  });

  it('streams: lines split across chunks, CRLF, a too-long line refused', async () => {
    async function* chunks(parts: string[]) {
      for (const p of parts) yield new TextEncoder().encode(p);
    }
    const t = await parseCsvStream(chunks(['a,la', 'bel\r\n1,', '0\r\n2,1', '\n3,2']), { file: 'f.csv', labelColumn: 'label' });
    expect(Array.from(t.features)).toEqual([1, 2, 3]);
    expect(Array.from(t.labels)).toEqual([0, 1, 2]);
    // A multi-byte character split between chunks decodes whole.
    const euro = new TextEncoder().encode('€,label\n1,0\n');
    async function* split() {
      yield euro.subarray(0, 2);
      yield euro.subarray(2);
    }
    expect((await parseCsvStream(split(), { file: 'f.csv', labelColumn: 'label' })).featureColumns).toEqual(['€']);
    await expect(parseCsvStream(chunks(['a,label\n', '1'.repeat(100)]), { file: 'f.csv', labelColumn: 'label', maxLineChars: 50 })).rejects.toThrow(
      /line 2 is longer than 50 characters/,
    );
    // Many rows: the arrays grow as lines arrive.
    const big = ['x,y,label', ...Array.from({ length: 5000 }, (_, i) => `${i},${-i},${i % 4}`)].join('\n');
    const bt = await parseCsvStream(chunks(big.match(/[\s\S]{1,777}/g)!), { file: 'f.csv', labelColumn: 'label' });
    expect(bt.count).toBe(5000);
    expect(bt.features[2 * 4999 + 1]).toBe(-4999);
  });
});

describe('dataset folder', () => {
  it('splits with a seed, records class balance and hashes, and detects a tampered file', async () => {
    const n = 200;
    const x = new Uint8Array(n * 4).map((_, i) => i % 256);
    const y = new Uint8Array(n).map((_, i) => i % 4);
    const a = splitIndices(n, { validationFraction: 0.25, seed: 3 });
    const b = splitIndices(n, { validationFraction: 0.25, seed: 3 });
    expect(Array.from(a.validation)).toEqual(Array.from(b.validation));
    expect(a.validation.length).toBe(50);
    expect(new Set([...a.train, ...a.validation]).size).toBe(n);

    const ds = buildDataset({ featureShape: [2, 2], numClasses: 4, pool: { x, y }, validationFraction: 0.25, seed: 3, normalize: 'scale255' });
    const dir = path.join(store.root, 'ds');
    const m = await writeDataset(dir, ds);
    expect(m.splits.train?.count).toBe(150);
    expect(m.splits.train?.classCounts.reduce((s, c) => s + c, 0)).toBe(150);
    expect(m.splits.validation?.x.shape).toEqual([50, 2, 2]);
    const back = await readDataset(dir);
    expect(Array.from(back.splits.train.y)).toEqual(Array.from(ds.splits.train.y));

    const yFile = path.join(dir, 'train-y.bin');
    const bytes = await readFile(yFile);
    bytes[0] = 9;
    await writeFile(yFile, bytes);
    await expect(readDataset(dir)).rejects.toThrow(/train-y\.bin: SHA-256 does not match the manifest/);
  });
});

describe('core:data-prep', () => {
  const confined = () => dataPrepStage({ dataRoots: [store.root, mnistPackageDir()] });

  it('prepares a seeded MNIST subset with train/validation/test splits', async () => {
    const plugin = confined();
    const params = plugin.paramsSchema.parse({ source: { format: 'mnist' }, limit: 2000, seed: 1 });
    expect(params.validationFraction).toBe(0.1);
    const ctx = makeContext({ store: store.store, stageId: 'prep' });
    const res = await plugin.run(ctx, params, {});
    expect(res.metrics).toMatchObject({ trainCount: 1800, validationCount: 200, testCount: 2000, numClasses: 10, classesInTrain: 10 });
    const ds = await readDataset(store.store.resolve(res.outputs.dataset!));
    expect(ds.featureShape).toEqual([28, 28]);
    expect(ds.normalization).toEqual({ kind: 'scale', factor: 1 / 255 });
    expect((await store.store.verify(res.outputs.dataset!)).ok).toBe(true);
  });

  it('rejects a corrupt IDX file with a non-retryable error naming the file', async () => {
    const f = mnistFiles();
    const bad = path.join(store.root, 'broken-images.idx');
    const good = await readFile(f.testImages);
    await writeFile(bad, good.subarray(0, 100_000)); // truncated
    const plugin = confined();
    const err = await dispatch({
      plugin,
      store: store.store,
      stageId: 'prep-bad',
      params: { source: { format: 'idx', images: bad, labels: f.testLabels } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).type).toBe('DATA_CORRUPT');
    expect((err as Error).message).toContain('broken-images.idx');
    expect((err as Error).message).toMatch(/truncated/);
  });

  it('rejects image and label files whose counts differ', async () => {
    const f = mnistFiles();
    const plugin = confined();
    const err = await dispatch({
      plugin,
      store: store.store,
      stageId: 'prep-mismatch',
      params: { source: { format: 'idx', images: f.testImages, labels: f.labels } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).type).toBe('DATA_MISMATCH');
    expect((err as Error).message).toMatch(/10000 images in t10k-images-idx3-ubyte but 60000 labels in train-labels-idx1-ubyte/);
  });

  it('reads a CSV source and standardises its features', async () => {
    const rows = ['f1,f2,y'];
    for (let i = 0; i < 100; i++) rows.push(`${i},${(i * 7) % 13},${i % 3}`);
    const file = path.join(store.root, 'tab.csv');
    await writeFile(file, rows.join('\n'));
    const plugin = confined();
    const ctx = makeContext({ store: store.store, stageId: 'prep-csv' });
    const res = await plugin.run(ctx, plugin.paramsSchema.parse({ source: { format: 'csv', path: file, labelColumn: 'y' }, validationFraction: 0.2 }), {});
    expect(res.metrics).toMatchObject({ trainCount: 80, validationCount: 20, numClasses: 3, features: 2 });
    const ds = await readDataset(store.store.resolve(res.outputs.dataset!));
    expect(ds.normalization.kind).toBe('zscore');
    const x = ds.splits.train.x as Float32Array;
    const mean = x.filter((_, i) => i % 2 === 0).reduce((s, v) => s + v, 0) / 80;
    expect(Math.abs(mean)).toBeLessThan(1e-5);
  });
});
