import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePort, startDevServer, type DevServer } from '../../dev/dev-server.js';
import { createConsoleLogger } from '../../lib/logger.js';
import { resolveTemporalCli } from '../../dev/temporal-cli.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalNamespace: string;
    temporalCliPath: string;
    temporalUiUrl: string;
  }
}

let server: DevServer | undefined;

/** One real Temporal dev server (SQLite file, with its Web UI) for the whole test run. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const logger = createConsoleLogger({ name: 'test-setup', level: 'warn' });
  const root = path.resolve(import.meta.dirname, '../..');
  const cli = await resolveTemporalCli({ toolsDir: path.join(root, '.tools'), env: process.env, logger });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-temporal-'));
  const uiPort = await freePort();
  server = await startDevServer({ cliPath: cli.path, dbFile: path.join(dir, 'temporal.db'), logger, namespace: 'default', uiPort });
  project.provide('temporalAddress', server.address);
  project.provide('temporalNamespace', server.namespace);
  project.provide('temporalCliPath', cli.path);
  project.provide('temporalUiUrl', server.uiUrl!);
  return async () => {
    await server?.stop();
  };
}
