export { multiDeviceFitStage, syncDirOf, type MultiDeviceFitOptions } from './multi-device-fit-stage.js';
export { multiDeviceFitParamsSchema, replicaCheckpointSchema, type MultiDeviceFitParams } from './params.js';
