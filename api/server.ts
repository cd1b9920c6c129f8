// Entry point: the GraphQL API (GraphiQL at /graphql) over HTTP.
import { createServer } from 'node:http';
import { connectApiApp } from '../app/api.js';
import { checkApiBinding, loadConfig } from '../app/config.js';
import { createRuntime } from '../app/runtime.js';
import { createConsoleLogger } from '../lib/logger.js';
import { startTracing } from '../lib/telemetry/tracing.js';
import { createNodeHandler } from './http.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  checkApiBinding(config);
  const logger = createConsoleLogger({ name: 'api', level: config.logLevel });
  // Before the Temporal client is made: it gets Temporal's tracing interceptor when tracing runs.
  const tracing = await startTracing({ enabled: config.telemetry.tracing, defaultServiceName: 'capstan-api', env: process.env });
  const rt = await createRuntime(config, logger);
  const app = await connectApiApp(rt, process.env);
  const server = createServer(createNodeHandler(app.api, { maxBodyBytes: config.api.maxBodyBytes, logger }));
  server.listen(config.api.port, config.api.host, () => {
    logger.info(`GraphQL API on http://${config.api.host === '0.0.0.0' ? 'localhost' : config.api.host}:${config.api.port}/graphql (auth: ${config.api.auth})`);
  });
  const stop = async () => {
    logger.info('API stopping');
    server.close();
    server.closeAllConnections();
    await app.close();
    await rt.close();
    // Spans still buffered are exported before the process ends.
    await tracing?.shutdown().catch((e: unknown) => logger.warn('could not flush the last spans', { error: (e as Error).message }));
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((e) => {
  process.stderr.write(`api failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
