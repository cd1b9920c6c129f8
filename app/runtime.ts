import path from 'node:path';
import { createDbStageCache, stageCacheMigrations } from '../activities/stage-cache.js';
import { createStageRecorder, stageRecordMigrations, type StageRecorder } from '../activities/stage-records.js';
import type { StageCache, StageMeter } from '../activities/index.js';
import { tokenMigrations, TokenStore } from '../auth/tokens.js';
import { savedPipelineMigrations } from '../engine/index.js';
import {
  createLedgerService,
  ledgerMigrations,
  ledgerWithOutbox,
  loadPriceSheet,
  openLedgerOutbox,
  type LedgerOutbox,
  type LedgerService,
} from '../ledger/index.js';
import { createArtifactStore } from '../lib/artifact-store/create.js';
import type { ArtifactStore } from '../lib/artifacts.js';
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
export const allMigrations: readonly Migration[] = [
  ...stageCacheMigrations,
  ...savedPipelineMigrations,
  ...ledgerMigrations,
  ...registryMigrations,
  ...tokenMigrations,
  ...stageRecordMigrations,
];

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
  /** The ledger as stages use it: usage goes through the outbox; a booking flushes the run's usage first. */
  ledger: LedgerService;
  /**
   * This process's durable ledger outbox (`<data dir>/ledger-outbox.db`): stage usage and served
   * predictions are written here before they are acknowledged, then booked with retries.
   */
  outbox: LedgerOutbox;
  /** API tokens (hashes only). */
  tokens: TokenStore;
  /** What stages get in their context. */
  services: StageServices;
  meter: StageMeter;
  cache: StageCache;
  /** Attempt and per-epoch records of stages (what the console's timeline and curves draw). */
  records: StageRecorder;
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
      maxModelParameters: config.maxModelParameters,
      ...(config.tfBackend ? { tfBackend: config.tfBackend } : {}),
      onnx: config.onnx,
    }));
  const db = await openDb({ url: config.databaseUrl, sqlitePath: config.sqlitePath });
  try {
    await migrate(db, allMigrations);
    const priceSheet = await loadPriceSheet(config.priceSheetPath ?? path.resolve(import.meta.dirname, '../config/price-sheet.json'));
    const direct = createLedgerService(db, { priceSheet });
    const models = new ModelRegistry(db);
    const outbox = await openLedgerOutbox({
      path: path.join(config.dataDir, 'ledger-outbox.db'),
      ledger: direct,
      resolveRunId: async (m, v) => (await models.getVersion(m, v))?.runId,
      logger,
    });
    // Records left by an earlier life of this process are booked now.
    outbox.start();
    const ledger = ledgerWithOutbox(direct, outbox);
    const artifacts = await createArtifactStore(config.artifacts, logger).catch(async (e: unknown) => {
      await outbox.close();
      throw e;
    });
    return {
      config,
      logger,
      db,
      artifacts,
      stages,
      models,
      ledger,
      outbox,
      tokens: new TokenStore(db),
      services: { ledger, models, python: config.python },
      meter: outbox,
      cache: createDbStageCache(db),
      records: createStageRecorder(db),
      async close() {
        await artifacts.close();
        await outbox.close();
        await db.close();
      },
    };
  } catch (e) {
    await db.close();
    throw e;
  }
}
