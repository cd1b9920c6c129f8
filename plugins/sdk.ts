// The public entry for plugin authors: `import { defineStage, z, … } from 'capstan/plugin'`
// (package.json `exports`). Everything a stage plugin needs, and nothing from the checkout's
// internals. `z` is re-exported so a plugin's params schema comes from the same zod the host
// checks it with.
export { z } from 'zod';
export { defineStage, PLUGIN_API_VERSION } from './contract.js';
export type {
  ArtifactRef,
  DataParallel,
  OutputMeta,
  OutputOptions,
  ReplicaInfo,
  ResourceClass,
  RunStarter,
  StageContext,
  StageInputs,
  StageMetrics,
  StagePlugin,
  StageResult,
  StageRetryPolicy,
  StageTimeouts,
  StageUsageMeter,
  UsageReport,
} from './contract.js';
export type { StageServices } from './services.js';
export { StageError, badInput } from '../lib/errors.js';
