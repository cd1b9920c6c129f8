import { readFile } from 'node:fs/promises';
import { DataError } from './data-error.js';

export interface CsvTable {
  /** Names of the feature columns, in order. */
  featureColumns: string[];
  count: number;
  /** count × featureColumns.length, row-major. */
  features: Float32Array;
  labels: Uint8Array;
  numClasses: number;
}

/**
 * Parses a numeric CSV with a header row. One column holds integer class labels (by name, or
 * by 0-based index); every other column is a feature. Empty cells, non-numbers, NaN/Infinity,
 * ragged rows and non-integer labels are rejected with the row and column named.
 */
export function parseCsv(text: string, opts: { file: string; labelColumn: string | number; maxClasses?: number }): CsvTable {
  const file = opts.file;
  const lines = text.split(/\r?\n/).filter((l) => l.trim().length > 0);
  if (lines.length < 2) throw new DataError('CSV needs a header row and at least one data row', { code: 'DATA_CORRUPT', file });
  const header = splitRow(lines[0]!);
  const labelIdx = typeof opts.labelColumn === 'number' ? opts.labelColumn : header.indexOf(opts.labelColumn);
  if (labelIdx < 0 || labelIdx >= header.length) {
    throw new DataError(`label column ${JSON.stringify(opts.labelColumn)} not found; columns are ${header.join(', ')}`, { code: 'DATA_MISMATCH', file });
  }
  const featureColumns = header.filter((_, i) => i !== labelIdx);
  if (featureColumns.length === 0) throw new DataError('CSV has no feature columns besides the label', { code: 'DATA_CORRUPT', file });
  const count = lines.length - 1;
  const features = new Float32Array(count * featureColumns.length);
  const labels = new Uint8Array(count);
  const maxClasses = opts.maxClasses ?? 256;
  let maxLabel = 0;
  for (let r = 0; r < count; r++) {
    const cells = splitRow(lines[r + 1]!);
    const rowNo = r + 2; // 1-based, counting the header
    if (cells.length !== header.length) {
      throw new DataError(`row ${rowNo} has ${cells.length} columns, the header has ${header.length}`, { code: 'DATA_CORRUPT', file });
    }
    let f = 0;
    for (let c = 0; c < cells.length; c++) {
      const raw = cells[c]!;
      const v = raw === '' ? NaN : Number(raw);
      if (!Number.isFinite(v)) {
        throw new DataError(`row ${rowNo}, column ${header[c]}: ${raw === '' ? 'empty cell' : `${JSON.stringify(raw)} is not a finite number`}`, { code: 'DATA_CORRUPT', file });
      }
      if (c === labelIdx) {
        if (!Number.isInteger(v) || v < 0 || v >= maxClasses) {
          throw new DataError(`row ${rowNo}: label ${raw} is not an integer class in 0..${maxClasses - 1}`, { code: 'DATA_CORRUPT', file });
        }
        labels[r] = v;
        if (v > maxLabel) maxLabel = v;
      } else {
        features[r * featureColumns.length + f++] = v;
      }
    }
  }
  return { featureColumns, count, features, labels, numClasses: maxLabel + 1 };
}

export async function readCsv(file: string, opts: { labelColumn: string | number; maxClasses?: number }): Promise<CsvTable> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`, { code: 'DATA_NOT_FOUND', file });
  }
  return parseCsv(text, { file, ...opts });
}

function splitRow(line: string): string[] {
  return line.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
}
