export { roiLedgerStage, roiLedgerParamsSchema, type RoiLedgerParams } from './plugin.js';
