export { pruneQuantizeStage, type PruneQuantizeOptions } from './stage.js';
export { pruneQuantizeParamsSchema, fineTuneCheckpointSchema, type FineTuneCheckpoint, type PruneQuantizeParams } from './params.js';
