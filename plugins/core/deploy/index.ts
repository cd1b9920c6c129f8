export { deployStage, checkGates, type DeployOptions, type GateResult, type ProductionBaseline } from './stage.js';
export { deployParamsSchema, promotionGatesSchema, hasGates, type DeployParams, type PromotionGates } from './params.js';
export { inputSpecOf } from './input-spec.js';
