// Entry point: the GraphQL API (GraphiQL at /graphql) over HTTP.
import { createServer } from 'node:http';
import { connectApiApp } from '../app/api.js';
import { loadConfig } from '../app/config.js';
import { createRuntime } from '../app/runtime.js';
import { createConsoleLogger } from '../lib/logger.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  const logger = createConsoleLogger({ name: 'api', level: config.logLevel });
  const rt = await createRuntime(config, logger);
  const app = await connectApiApp(rt, process.env);
  const api = app.api;
  const server = createServer(async (req, res) => {
    const yogaHandler = api.yoga as unknown as (req: unknown, res: unknown) => void;
    // Plain routes (e.g. prediction) go through api.fetch; everything else straight to yoga's node handler.
    const url = req.url ?? '/';
    if (url.startsWith('/graphql')) return yogaHandler(req, res);
    try {
      const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : await readBody(req);
      const response = await api.fetch(
        new Request(`http://${req.headers.host ?? 'localhost'}${url}`, {
          method: req.method ?? 'GET',
          headers: req.headers as Record<string, string>,
          ...(body ? { body: new Uint8Array(body) } : {}),
        }),
      );
      res.writeHead(response.status, Object.fromEntries(response.headers.entries()));
      res.end(Buffer.from(await response.arrayBuffer()));
    } catch (e) {
      logger.error('request failed', { url, error: (e as Error).message });
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'internal error' }));
    }
  });
  server.listen(config.api.port, config.api.host, () => {
    logger.info(`GraphQL API on http://${config.api.host === '0.0.0.0' ? 'localhost' : config.api.host}:${config.api.port}/graphql`);
  });
  const stop = async () => {
    logger.info('API stopping');
    server.close();
    await app.close();
    await rt.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

function readBody(req: import('node:http').IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

main().catch((e) => {
  process.stderr.write(`api failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
