export { deployStage, checkGates, type DeployOptions, type GateResult } from './stage.js';
export { deployParamsSchema, promotionGatesSchema, type DeployParams, type PromotionGates } from './params.js';
