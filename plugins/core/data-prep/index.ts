export { dataPrepStage, mnistFiles, type DataPrepOptions } from './stage.js';
export { dataPrepParamsSchema, type DataPrepParams } from './params.js';
