import type { Readable } from 'node:stream';

/**
 * Calls `onLine` for every line of a text stream (without its newline; empty lines skipped) and
 * resolves when the stream ends, closes or fails. A line longer than `maxLineBytes` is handed
 * over cut at that length, so a peer that never sends a newline cannot grow memory without bound.
 */
export function readLines(stream: Readable | NodeJS.ReadableStream, onLine: (line: string) => void, opts: { maxLineBytes?: number } = {}): Promise<void> {
  const max = opts.maxLineBytes ?? Infinity;
  return new Promise((resolve) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.length) onLine(line);
      }
      if (buf.length > max) {
        onLine(buf.slice(0, max));
        buf = '';
      }
    });
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      if (buf.length) onLine(buf);
      buf = '';
      resolve();
    };
    stream.once('end', end);
    stream.once('close', end);
    stream.once('error', end);
  });
}
