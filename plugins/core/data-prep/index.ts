export { dataPrepStage, mnistFiles, type DataPrepOptions } from './data-prep-stage.js';
export { dataPrepParamsSchema, type DataPrepParams } from './params.js';
