// Finds or installs the pinned tools the stack and the tests run: the temporal CLI (see
// dev/temporal-cli.ts), SeaweedFS's weed (see dev/seaweed.ts) and Jaeger (see dev/jaeger.ts,
// built once through the Go module proxy: the tracing tests read traces back from it) and Temporal's
// time-skipping test server (see dev/test-server.ts, from Maven Central). Prints their paths.
import path from 'node:path';
import { createConsoleLogger } from '../lib/logger.js';
import { resolveJaeger } from '../dev/jaeger.js';
import { resolveWeed } from '../dev/seaweed.js';
import { resolveTemporalCli } from '../dev/temporal-cli.js';
import { resolveTestServer } from '../dev/test-server.js';

const root = path.resolve(import.meta.dirname, '..');
const logger = createConsoleLogger({ name: 'provision' });
const toolsDir = path.join(root, '.tools');
resolveTemporalCli({ toolsDir, env: process.env, logger })
  .then((cli) => {
    const weed = resolveWeed({ toolsDir, env: process.env, logger });
    const jaeger = resolveJaeger({ toolsDir, env: process.env, logger });
    const testServer = resolveTestServer({ toolsDir, env: process.env, logger });
    process.stdout.write(`${cli.path}\n${weed.path}\n${jaeger.path}\n${testServer.path}\n`);
  })
  .catch((e) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
