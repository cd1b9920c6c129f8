export { createActivities, type Activities, type ActivityDeps, type StageMeter, type StageUsage, type StageCache } from './run-stage.js';
