export { dataPrepStage, mnistFiles, mnistPackageDir, type DataPrepOptions } from './stage.js';
export { dataPrepParamsSchema, dataPrepParamsSchemaFor, type DataPrepParams } from './params.js';
