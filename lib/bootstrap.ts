import { ArtifactStore } from './artifacts.js';
import type { CapstanConfig } from './config.js';
import { openDb } from './db/open.js';
import type { Db } from './db/types.js';
import type { Logger } from './logger.js';
import { buildRegistry } from '../plugins/builtins.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { StageServices } from '../plugins/services.js';
import type { StageCache, StageMeter } from '../activities/index.js';
import { createDbStageCache, migrateOps } from './ops-store.js';

/** The long-lived parts every Capstan process shares, built once from the config. */
export interface Runtime {
  config: CapstanConfig;
  registry: StageRegistry;
  artifacts: ArtifactStore;
  db: Db;
  services: StageServices;
  meter?: StageMeter;
  cache?: StageCache;
  logger: Logger;
  close(): Promise<void>;
}

export async function bootstrap(config: CapstanConfig, logger: Logger): Promise<Runtime> {
  const registry = await buildRegistry({ external: config.plugins, cwd: config.cwd });
  const artifacts = new ArtifactStore(config.artifactsDir);
  const db = await openDb({ url: config.databaseUrl, sqlitePath: config.sqlitePath });
  await migrateOps(db);
  const services: StageServices = { db, config };
  return {
    cache: createDbStageCache(db),
    config,
    registry,
    artifacts,
    db,
    services,
    logger,
    close: () => db.close(),
  };
}
