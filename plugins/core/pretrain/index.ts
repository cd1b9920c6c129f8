export { pretrainStage, type PretrainOptions } from './stage.js';
export {
  pretrainParamsSchema,
  pretrainParamsSchemaFor,
  modelParameters,
  DEFAULT_MAX_MODEL_PARAMETERS,
  pretrainCheckpointSchema,
  modelArchSchema,
  layerSpecSchema,
  type LayerSpecParams,
  type PretrainParams,
  type PretrainCheckpoint,
} from './params.js';
