export { multiDeviceFitStage, syncDirOf, type MultiDeviceFitOptions } from './stage.js';
export { multiDeviceFitParamsSchema, replicaCheckpointSchema, type MultiDeviceFitParams } from './params.js';
