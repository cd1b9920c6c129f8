import type { Client } from '@temporalio/client';

/** Capstan's schedules are `capstan/<saved pipeline>/<6 hex>`; others in the namespace are not listed. */
export const SCHEDULE_PREFIX = 'capstan/';

export interface ScheduleView {
  id: string;
  pipeline: string;
  cron: string[];
  every: string[];
  paused: boolean;
  nextActionTimes: Date[];
  recentRuns: string[];
}

export async function describeSchedule(client: Client, id: string): Promise<ScheduleView> {
  const d = await client.schedule.getHandle(id).describe();
  return {
    id,
    pipeline: String(d.memo?.pipeline ?? ''),
    cron: (d.memo?.cron as string[] | undefined) ?? [],
    every: (d.memo?.every as string[] | undefined) ?? [],
    paused: d.state.paused,
    nextActionTimes: d.info.nextActionTimes,
    recentRuns: d.info.recentActions.map((a) => a.action.workflow.workflowId),
  };
}
