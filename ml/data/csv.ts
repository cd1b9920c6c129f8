import { StringDecoder } from 'node:string_decoder';
import { DataError } from './data-error.js';
import { openDataFile, type DataFile } from './data-file.js';

export interface CsvTable {
  /** Names of the feature columns, in order. */
  featureColumns: string[];
  count: number;
  /** count × featureColumns.length, row-major. */
  features: Float32Array;
  labels: Uint8Array;
  numClasses: number;
}

export interface CsvOptions {
  /** Named in errors. */
  file: string;
  /** Column name, or 0-based column index, of the integer class label. */
  labelColumn: string | number;
  maxClasses?: number;
  /** Longest line accepted, in characters (default 16 Mi). */
  maxLineChars?: number;
}

const DEFAULT_MAX_LINE = 16 * 1024 * 1024;

/**
 * Builds a table line by line. Errors name the file, line and column numbers — never the text of
 * a cell or of the header, so a file that is not what it should be is not echoed back.
 */
class CsvBuilder {
  private header: string[] | undefined;
  private labelIdx = -1;
  private width = 0;
  private count = 0;
  private features = new Float32Array(0);
  private labels = new Uint8Array(0);
  private maxLabel = 0;
  private readonly maxClasses: number;

  constructor(private readonly opts: CsvOptions) {
    this.maxClasses = opts.maxClasses ?? 256;
  }

  private fail(message: string, code = 'DATA_CORRUPT'): never {
    throw new DataError(message, { code, file: this.opts.file });
  }

  line(text: string, lineNo: number): void {
    if (text.trim().length === 0) return;
    const cells = splitRow(text);
    if (!this.header) {
      this.header = cells;
      const lc = this.opts.labelColumn;
      this.labelIdx = typeof lc === 'number' ? lc : cells.indexOf(lc);
      if (this.labelIdx < 0 || this.labelIdx >= cells.length) {
        this.fail(
          `label column ${JSON.stringify(lc)} not found in the header (line ${lineNo}, ${cells.length} column${cells.length === 1 ? '' : 's'})`,
          'DATA_MISMATCH',
        );
      }
      this.width = cells.length - 1;
      if (this.width === 0) this.fail(`the header (line ${lineNo}) has no feature columns besides the label`);
      return;
    }
    if (cells.length !== this.header.length) {
      this.fail(`line ${lineNo} has ${cells.length} columns, the header has ${this.header.length}`);
    }
    this.grow();
    const r = this.count;
    let f = 0;
    for (let c = 0; c < cells.length; c++) {
      const raw = cells[c]!;
      const v = raw === '' ? NaN : Number(raw);
      if (!Number.isFinite(v)) this.fail(`line ${lineNo}, column ${c + 1}: ${raw === '' ? 'empty cell' : 'not a finite number'}`);
      if (c === this.labelIdx) {
        if (!Number.isInteger(v) || v < 0 || v >= this.maxClasses) {
          this.fail(`line ${lineNo}, column ${c + 1}: the label is not an integer class in 0..${this.maxClasses - 1}`);
        }
        this.labels[r] = v;
        if (v > this.maxLabel) this.maxLabel = v;
      } else {
        this.features[r * this.width + f++] = v;
      }
    }
    this.count++;
  }

  private grow(): void {
    if (this.count < this.labels.length) return;
    const cap = Math.max(1024, this.labels.length * 2);
    const labels = new Uint8Array(cap);
    labels.set(this.labels);
    const features = new Float32Array(cap * this.width);
    features.set(this.features);
    this.labels = labels;
    this.features = features;
  }

  finish(): CsvTable {
    if (!this.header || this.count === 0) this.fail('CSV needs a header row and at least one data row');
    return {
      featureColumns: this.header.filter((_, i) => i !== this.labelIdx),
      count: this.count,
      features: this.features.slice(0, this.count * this.width),
      labels: this.labels.slice(0, this.count),
      numClasses: this.maxLabel + 1,
    };
  }
}

/**
 * Parses a numeric CSV with a header row. One column holds integer class labels (by name, or
 * by 0-based index); every other column is a feature. Empty cells, non-numbers, NaN/Infinity,
 * ragged rows and non-integer labels are rejected with the line and column numbers.
 */
export function parseCsv(text: string, opts: CsvOptions): CsvTable {
  const b = new CsvBuilder(opts);
  text.split('\n').forEach((l, i) => b.line(stripCr(l), i + 1));
  return b.finish();
}

/** Parses CSV from chunks as they arrive (line by line; never the whole text in memory). */
export async function parseCsvStream(chunks: AsyncIterable<Uint8Array | string>, opts: CsvOptions): Promise<CsvTable> {
  const b = new CsvBuilder(opts);
  const maxLine = opts.maxLineChars ?? DEFAULT_MAX_LINE;
  const decoder = new StringDecoder('utf8');
  let rest = '';
  let lineNo = 0;
  const feed = (text: string) => {
    let start = 0;
    let nl: number;
    while ((nl = text.indexOf('\n', start)) >= 0) {
      const line = rest + text.slice(start, nl);
      rest = '';
      b.line(stripCr(line), ++lineNo);
      start = nl + 1;
    }
    rest += text.slice(start);
    if (rest.length > maxLine) throw new DataError(`line ${lineNo + 1} is longer than ${maxLine} characters`, { code: 'DATA_CORRUPT', file: opts.file });
  };
  for await (const chunk of chunks) feed(typeof chunk === 'string' ? chunk : decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
  feed(decoder.end());
  if (rest.length) b.line(stripCr(rest), ++lineNo);
  return b.finish();
}

/**
 * Reads a CSV file by streaming it: at most the size it had when opened is read. `file` is a
 * path (opened as it is: confine user paths first) or an already opened (confined) file.
 */
export async function readCsv(file: string | DataFile, opts: Omit<CsvOptions, 'file'>): Promise<CsvTable> {
  const f = typeof file === 'string' ? await openDataFile(file) : file;
  if (f.size === 0) {
    await f.handle.close();
    throw new DataError('CSV needs a header row and at least one data row (the file is empty)', { code: 'DATA_CORRUPT', file: f.path });
  }
  const stream = f.handle.createReadStream({ start: 0, end: f.size - 1, highWaterMark: 1 << 20 });
  try {
    return await parseCsvStream(stream, { ...opts, file: f.path });
  } finally {
    stream.destroy();
    await f.handle.close().catch(() => undefined);
  }
}

function stripCr(l: string): string {
  return l.endsWith('\r') ? l.slice(0, -1) : l;
}

function splitRow(line: string): string[] {
  return line.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
}
