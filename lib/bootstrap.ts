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
import { migrate } from './db/migrate.js';
import { createLedgerService, ledgerMigrations, loadPriceSheet } from '../ledger/index.js';
import path from 'node:path';

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
  const registry = await buildRegistry({ external: config.plugins, cwd: config.cwd, baseDir: config.cwd, ...(config.tfBackend ? { tfBackend: config.tfBackend } : {}) });
  const artifacts = new ArtifactStore(config.artifactsDir);
  const db = await openDb({ url: config.databaseUrl, sqlitePath: config.sqlitePath });
  await migrateOps(db);
  await migrate(db, ledgerMigrations);
  const priceSheet = await loadPriceSheet(config.priceSheetPath ?? path.resolve(import.meta.dirname, '../config/price-sheet.json'));
  const ledger = createLedgerService(db, { priceSheet });
  const services: StageServices = { db, config, ledger };
  return {
    cache: createDbStageCache(db),
    meter: ledger,
    config,
    registry,
    artifacts,
    db,
    services,
    logger,
    close: () => db.close(),
  };
}
