// Finds or installs the pinned temporal CLI (see lib/temporal-cli.ts) and prints its path.
import path from 'node:path';
import { createConsoleLogger } from '../lib/logger.js';
import { resolveTemporalCli } from '../dev/temporal-cli.js';

const root = path.resolve(import.meta.dirname, '..');
const logger = createConsoleLogger({ name: 'provision' });
resolveTemporalCli({ toolsDir: path.join(root, '.tools'), env: process.env, logger })
  .then((cli) => process.stdout.write(`${cli.path}\n`))
  .catch((e) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
