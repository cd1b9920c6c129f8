export { deployStage, deployParamsSchema, promotionGatesSchema, checkGates, registryFromServices, type DeployParams, type PromotionGates, type GateResult } from './plugin.js';
export { exportModelFolder, type ExportResult } from './export.js';
