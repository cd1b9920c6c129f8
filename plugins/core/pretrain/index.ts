export { pretrainStage, type PretrainOptions } from './stage.js';
export { pretrainParamsSchema, pretrainCheckpointSchema, modelArchSchema, layerSpecSchema, type LayerSpecParams, type PretrainParams, type PretrainCheckpoint } from './params.js';
