export { roiLedgerStage } from './stage.js';
export { roiLedgerParamsSchema, type RoiLedgerParams } from './params.js';
