export { pretrainStage, type PretrainOptions } from './pretrain-stage.js';
export { pretrainParamsSchema, pretrainCheckpointSchema, modelArchSchema, type PretrainParams, type PretrainCheckpoint } from './params.js';
