export { runPipelineWorkflow } from './run-pipeline.js';
