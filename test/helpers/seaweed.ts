import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveWeed, startSeaweed, type Seaweed } from '../../dev/seaweed.js';
import { createConsoleLogger } from '../../lib/logger.js';

/** A real SeaweedFS (`weed server -s3`) of the calling test file, on free ports, in a temporary folder. */
export async function startTestSeaweed(): Promise<Seaweed> {
  const logger = createConsoleLogger({ name: 'test-seaweed', level: 'warn' });
  const root = path.resolve(import.meta.dirname, '../..');
  const weed = resolveWeed({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
  return startSeaweed({ weedPath: weed.path, dir: mkdtempSync(path.join(os.tmpdir(), 'capstan-weed-')), logger });
}
