export { runPipelineWorkflow } from './run-pipeline.js';
export { startScheduledPipelineWorkflow } from './scheduled-pipeline.js';
export { slotKeeperWorkflow } from './slot-keeper.js';
