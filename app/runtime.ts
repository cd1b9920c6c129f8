import path from 'node:path';
import { createDbStageCache, stageCacheMigrations } from '../activities/stage-cache.js';
import { stageRecordMigrations } from '../activities/stage-records.js';
import type { StageCache, StageMeter } from '../activities/index.js';
import { tokenMigrations, TokenStore } from '../auth/tokens.js';
import { savedPipelineMigrations } from '../engine/index.js';
import { createLedgerService, ledgerMigrations, loadPriceSheet, type LedgerService } from '../ledger/index.js';
import { ArtifactStore } from '../lib/artifacts.js';
import { migrate } from '../lib/db/migrate.js';
import { openDb } from '../lib/db/open.js';
import type { Db, Migration } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import { buildRegistry } from '../plugins/builtins.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { StageServices } from '../plugins/services.js';
import { ModelRegistry, registryMigrations } from '../serving/registry.js';
import type { CapstanConfig } from './config.js';

/** Every table Capstan keeps: applied once, when a process starts (each id once, in any order between modules). */
export const allMigrations: readonly Migration[] = [...stageCacheMigrations, ...savedPipelineMigrations, ...ledgerMigrations, ...registryMigrations, ...tokenMigrations, ...stageRecordMigrations];

/** The long-lived parts every Capstan process shares, built once from the config. */
export interface Runtime {
  config: CapstanConfig;
  logger: Logger;
  db: Db;
  artifacts: ArtifactStore;
  /** The stage plugins (built-ins + CAPSTAN_PLUGINS), frozen. */
  stages: StageRegistry;
  /** Registered model versions and aliases. */
  models: ModelRegistry;
  ledger: LedgerService;
  /** API tokens (hashes only). */
  tokens: TokenStore;
  /** What stages get in their context. */
  services: StageServices;
  meter: StageMeter;
  cache: StageCache;
  close(): Promise<void>;
}

/** Opens the database, applies all migrations, and builds the stores and registries once. */
export async function createRuntime(config: CapstanConfig, logger: Logger, o: { stages?: StageRegistry } = {}): Promise<Runtime> {
  const stages =
    o.stages ??
    (await buildRegistry({
      external: config.plugins,
      cwd: config.cwd,
      baseDir: config.cwd,
      dataRoots: config.dataRoots,
      maxDataFileBytes: config.maxDataFileBytes,
      ...(config.tfBackend ? { tfBackend: config.tfBackend } : {}),
    }));
  const db = await openDb({ url: config.databaseUrl, sqlitePath: config.sqlitePath });
  try {
    await migrate(db, allMigrations);
    const priceSheet = await loadPriceSheet(config.priceSheetPath ?? path.resolve(import.meta.dirname, '../config/price-sheet.json'));
    const ledger = createLedgerService(db, { priceSheet });
    const models = new ModelRegistry(db);
    return {
      config,
      logger,
      db,
      artifacts: new ArtifactStore(config.artifactsDir),
      stages,
      models,
      ledger,
      tokens: new TokenStore(db),
      services: { ledger, models },
      meter: ledger,
      cache: createDbStageCache(db),
      close: () => db.close(),
    };
  } catch (e) {
    await db.close();
    throw e;
  }
}
