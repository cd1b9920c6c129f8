export { pretrainStage, type PretrainOptions } from './stage.js';
export { pretrainParamsSchema, pretrainCheckpointSchema, modelArchSchema, type PretrainParams, type PretrainCheckpoint } from './params.js';
