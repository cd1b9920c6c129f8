import { createServer } from 'node:http';
import { createApi, type Api } from '../../api/app.js';
import { createNodeHandler } from '../../api/http.js';
import { coreModule } from '../../api/modules/core.js';
import { modelsModule } from '../../api/modules/models.js';
import type { TokenStore } from '../../auth/tokens.js';
import type { Engine } from '../../engine/index.js';
import type { Db } from '../../lib/db/types.js';
import { silentLogger } from '../../lib/logger.js';
import type { ModelServer } from '../../serving/model-server.js';
import type { ModelRegistry } from '../../serving/registry.js';

/**
 * The models module over the core schema, served over real HTTP by the API's own Node handler.
 * No run is touched, so no engine is needed; auth is off (these files are about serving;
 * test/api/auth.test.ts covers tokens and roles).
 */
export async function serveModelsApi(o: {
  db: Db;
  models: ModelRegistry;
  modelServer: ModelServer;
}): Promise<{ api: Api; url: string; close(): Promise<void> }> {
  const api = createApi(
    {
      engine: {} as Engine,
      db: o.db,
      models: o.models,
      modelServer: o.modelServer,
      tokens: {} as TokenStore,
      auth: { kind: 'off' },
      http: { allowedHosts: [], corsOrigins: [], maxSubscriptionsPerToken: 4, streamIdleMs: 60_000 },
      logger: silentLogger,
    },
    [coreModule, modelsModule],
  );
  const server = createServer(createNodeHandler(api, { maxBodyBytes: 32 * 1024 * 1024, logger: silentLogger }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    api,
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
