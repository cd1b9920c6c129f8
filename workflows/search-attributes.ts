import { defineSearchAttributeKey } from '@temporalio/common';

/** Custom search attributes: Keyword, so SQL visibility (the dev server's SQLite) can index them. */
export const PipelineNameKey = defineSearchAttributeKey('CapstanPipeline', 'KEYWORD');
export const RunStatusKey = defineSearchAttributeKey('CapstanStatus', 'KEYWORD');
export const CurrentStageKey = defineSearchAttributeKey('CapstanStage', 'KEYWORD');
export const ResumedFromKey = defineSearchAttributeKey('CapstanResumedFrom', 'KEYWORD');
/** The public id of the API token that started the run (or created its schedule): what per-principal quotas count. */
export const StartedByKey = defineSearchAttributeKey('CapstanStartedBy', 'KEYWORD');

export const allSearchAttributes = [PipelineNameKey, RunStatusKey, CurrentStageKey, ResumedFromKey, StartedByKey];
