export { runPipelineWorkflow } from './run-pipeline.js';
export { startScheduledPipelineWorkflow } from './scheduled-pipeline.js';
