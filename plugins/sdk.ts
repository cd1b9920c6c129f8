// The public entry for plugin authors: `import { defineStage, z, … } from 'capstan/plugin'`
// (package.json `exports`). Everything a stage plugin needs, and nothing from the checkout's
// internals. `npm pack` compiles it, with what it imports, to dist/sdk (tsconfig.sdk.json,
// scripts/build-sdk.mjs): keep its imports to modules that need nothing but zod and Node.
// `z` is re-exported so a plugin's params schema is a zod v4 schema; the host accepts one from
// the plugin's own copy of zod too.
export { z } from 'zod';
export { defineStage, PLUGIN_API_VERSION } from './contract.js';
// A stage in any language: a child process speaking the stage protocol (docs/stage-protocol.md).
export { defineCommandStage } from './command/define-command-stage.js';
export type { CommandSpec, CommandStageOptions } from './command/define-command-stage.js';
export type {
  ArtifactRef,
  DataParallel,
  DeclaredEstimate,
  EstimateScale,
  OutputMeta,
  OutputOptions,
  ReplicaInfo,
  ResourceClass,
  RunStarter,
  StageContext,
  StageDevice,
  StageInputs,
  StageMetrics,
  StagePlugin,
  StageResult,
  StageRetryPolicy,
  StageServices,
  StageTimeouts,
  StageUsageMeter,
  UsageReport,
} from './contract.js';
export { StageError, badInput } from '../lib/errors.js';
