import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { Decision, RunState } from './types.js';

/** The run's state: per stage status, attempts, timings, outputs, metrics; events. */
export const progressQuery = defineQuery<RunState>('progress');

/** An operator decision on a paused run (retry / skip / abort). Rejected with a reason when invalid. */
export const decideUpdate = defineUpdate<RunState, [Decision]>('decide');
