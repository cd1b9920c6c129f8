export { Engine, type EngineDeps, type ResumeResult } from './engine.js';
export { EngineError } from './errors.js';
export type { RunStreamEvent } from './events.js';
export type { RunView } from './read-model.js';
export type { RunFilter, RunListItem, RunPage } from './run-list.js';
export type { ResumePlanStage } from './resume.js';
export { savedPipelineMigrations, type SavedPipeline } from './saved-pipelines.js';
export type { ScheduleView } from './schedules.js';
