// Entry point: the GraphQL API (GraphiQL at /graphql) over HTTP.
import { createServer } from 'node:http';
import { connectApiApp } from '../app/api.js';
import { checkApiBinding, loadConfig, logFormatFromEnv } from '../app/config.js';
import { apiHealth } from '../app/health.js';
import { createRuntime } from '../app/runtime.js';
import { createConsoleLogger, fatalLine } from '../lib/logger.js';
import { startOpsServer, type OpsServer } from '../lib/telemetry/ops-server.js';
import { startTracing } from '../lib/telemetry/tracing.js';
import { createNodeHandler } from './http.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  checkApiBinding(config);
  const logger = createConsoleLogger({ name: 'api', level: config.logLevel, format: config.telemetry.logFormat });
  // Before the Temporal client is made: it gets Temporal's tracing interceptor when tracing runs.
  const tracing = await startTracing({ enabled: config.telemetry.tracing, defaultServiceName: 'capstan-api', env: process.env });
  const rt = await createRuntime(config, logger);
  const app = await connectApiApp(rt, process.env);
  const health = apiHealth({ temporal: app.connection, db: rt.db, logger });
  const t = config.telemetry;
  // /metrics on the API's port when a scrape token guards it (api/http.ts), and on the ops listener.
  const ops = { ...(t.metricsToken ? { metricsToken: t.metricsToken } : {}), ...(app.metrics ? { metrics: app.metrics } : {}) };
  const server = createServer(createNodeHandler(app.api, { maxBodyBytes: config.api.maxBodyBytes, logger, ops, health }));
  // The ops listener (CAPSTAN_OPS_LISTEN): /metrics, /livez and /readyz.
  let opsServer: OpsServer | undefined;
  if (t.opsListen) {
    opsServer = await startOpsServer({ listen: t.opsListen, ...ops, live: health.live, ready: health.ready, logger });
    logger.info(`ops listener on ${opsServer.url} (/metrics${t.metricsToken ? ', scrape token required' : ''}, /livez, /readyz)`);
  }
  server.listen(config.api.port, config.api.host, () => {
    logger.info(`GraphQL API on http://${config.api.host === '0.0.0.0' ? 'localhost' : config.api.host}:${config.api.port}/graphql (auth: ${config.api.auth})`);
  });
  const stop = async () => {
    logger.info('API stopping');
    // /readyz answers 503 from here on (on the ops listener until the process exits).
    health.drain();
    server.close();
    server.closeAllConnections();
    await app.close();
    await rt.close();
    await opsServer?.close();
    health.stop();
    // Spans still buffered are exported before the process ends.
    await tracing?.shutdown().catch((e: unknown) => logger.warn('could not flush the last spans', { error: (e as Error).message }));
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((e) => {
  process.stderr.write(fatalLine({ name: 'api', format: logFormatFromEnv(process.env), message: 'api failed', error: e }));
  process.exit(1);
});
