// Triggers: what starts runs besides a person — saved pipelines started by events, and schedules
// (Temporal Schedules that start startScheduledPipelineWorkflow). Runs start through the engine's
// `start`, so quotas and validation are the same as for any run.
import { createHash, randomBytes } from 'node:crypto';
import { type Client, ScheduleNotFoundError, type ScheduleHandle } from '@temporalio/client';
import type { Db } from '../lib/db/types.js';
import { formatDuration, parseDurationMs } from '../lib/duration.js';
import type { Logger } from '../lib/logger.js';
import { startScheduledPipelineWorkflow } from '../workflows/index.js';
import { PipelineNameKey, RunStatusKey, StartedByKey } from '../workflows/search-attributes.js';
import type { RunStarter, ScheduledPipelineInput } from '../workflows/types.js';
import { EngineError, notFound } from './errors.js';
import { applyEventPayload } from './events.js';
import { countSchedules, type KeyedLock, type QuotaSettings, quotaExceeded, quotaKey, RecentIds, shortestGapMs } from './quotas.js';
import type { RunView } from './read-model.js';
import { type SavedPipeline, SavedPipelineStore } from './saved-pipelines.js';
import { describeSchedule, SCHEDULE_PREFIX, type ScheduleView } from './schedules.js';
import { checkParamsSize, type ResolvedSpec, SpecValidationError, specSummary } from './spec.js';

const TRIGGER_RE = /^[a-z0-9][a-z0-9._-]*$/i;

export interface TriggerDeps {
  client: Client;
  db: Db;
  logger: Logger;
  taskQueues: { workflows: string; cpu: string; gpu: string };
  /** API tokens: a saved pipeline's triggers fire only while the token that saved it is active (not checked when omitted). */
  tokens?: { isActive(tokenId: string): Promise<boolean> };
  quotas: QuotaSettings;
  /** The engine's per-token lock: schedule creations of one token run one at a time. */
  quotaLock: KeyedLock;
  /** Validates and resolves a spec against the plugin registry (SpecValidationError). */
  resolve(spec: unknown): ResolvedSpec;
  /** Starts a run as the engine does (validation, quotas). */
  start(spec: unknown, extra: { startedBy?: RunStarter; workflowId?: string }): Promise<RunView>;
}

export class Triggers {
  readonly pipelines: SavedPipelineStore;
  private readonly recentSchedules = new RecentIds();

  constructor(private readonly deps: TriggerDeps) {
    this.pipelines = new SavedPipelineStore(deps.db);
  }

  /**
   * Saves a spec under its name, recording who saved it (its triggers fire while that token is
   * active). Placeholders (`{{event.x}}`) are checked when an event fills them in.
   */
  async savePipeline(spec: unknown, triggers: string[] = [], o: { savedBy?: RunStarter } = {}): Promise<SavedPipeline> {
    try {
      this.deps.resolve(spec);
    } catch (e) {
      if (!(e instanceof SpecValidationError)) throw e;
      const placeholders = JSON.stringify(spec).includes('{{');
      const real = e.issues.filter((i) => !(i.code === 'PLUGIN_PARAMS_INVALID' && placeholders));
      if (real.length) throw new SpecValidationError(real);
    }
    for (const t of triggers) if (!TRIGGER_RE.test(t)) throw new EngineError('BAD_ARGUMENT', `trigger "${t}" must be an event type like dataset.updated`);
    return this.pipelines.save({ name: (spec as { name: string }).name, spec, triggers, ...(o.savedBy ? { savedBy: o.savedBy } : {}) });
  }

  /**
   * Starts every saved pipeline whose triggers include this event type, with the payload filled in.
   * A trigger fires only while the token that saved its pipeline is active (skipped, with the reason
   * logged, once it is revoked or expired); an event the host emits itself (no starter, e.g.
   * roi.below) starts the run as that saver.
   */
  async emitEvent(type: string, payload: unknown = {}, o: { startedBy?: RunStarter; eventId?: string } = {}): Promise<RunView[]> {
    if (o.eventId !== undefined && (o.eventId.trim() === '' || o.eventId.length > 200))
      throw new EngineError('BAD_ARGUMENT', 'eventId must be 1–200 characters');
    // The payload fills params in: it is bounded like params (the filled-in spec is checked again when it starts).
    checkParamsSize(payload, 'payload');
    const runs: RunView[] = [];
    for (const p of await this.pipelines.byTrigger(type)) {
      const saver = quotaKey(p.savedBy);
      if (saver && this.deps.tokens && !(await this.deps.tokens.isActive(saver))) {
        this.deps.logger.warn(
          `trigger skipped: saved pipeline ${p.name} was saved by ${p.savedBy!.name}, whose token is revoked or expired; save it again with an active token to re-arm it`,
          { pipeline: p.name, event: type, tokenId: saver },
        );
        continue;
      }
      const startedBy = o.startedBy ?? p.savedBy;
      const spec = applyEventPayload(p.spec, { type, payload });
      // The same event id always maps to the same run id: a retried call finds the run it started.
      const workflowId = o.eventId !== undefined ? eventRunId(p.name, type, o.eventId) : undefined;
      runs.push(await this.deps.start(spec, { ...(startedBy ? { startedBy } : {}), ...(workflowId ? { workflowId } : {}) }));
    }
    return runs;
  }

  /**
   * Starts a saved pipeline on a cron expression and/or an interval ("30s", "1h"). Firings closer
   * together than the minimum interval are refused, and so is a schedule beyond its creator's quota.
   */
  async schedule(name: string, o: { cron?: string; every?: string; startedBy?: RunStarter }): Promise<ScheduleView> {
    const saved = await this.pipelines.get(name);
    if (!saved) throw notFound(`saved pipeline ${name}`);
    if (!o.cron && !o.every) throw new EngineError('BAD_ARGUMENT', 'schedulePipeline needs cron or every');
    const min = this.deps.quotas.minScheduleIntervalMs;
    const everyMs = o.every ? parseDurationMs(o.every) : undefined;
    if (o.every && (everyMs === undefined || everyMs < min)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `every must be a duration of at least ${formatDuration(min)} (CAPSTAN_MIN_SCHEDULE_INTERVAL), like "5m" or "1h"; got "${o.every}"`,
      );
    }
    // Checked now, so a schedule never starts with a spec that is already invalid; but what the
    // schedule stores is the spec itself, resolved again at each firing (plugins may be upgraded).
    const input = this.deps.resolve(saved.spec);
    const key = quotaKey(o.startedBy);
    if (!key) return this.createSchedule(saved, o, everyMs, input);
    return this.deps.quotaLock.run(`schedules:${key}`, async () => {
      const have = await countSchedules(this.deps.client, key, this.recentSchedules);
      if (have >= this.deps.quotas.maxSchedules) {
        throw quotaExceeded(
          `${o.startedBy!.name} already has ${have} schedules; at most ${this.deps.quotas.maxSchedules} (CAPSTAN_MAX_SCHEDULES) — delete one first`,
        );
      }
      const view = await this.createSchedule(saved, o, everyMs, input);
      this.recentSchedules.add(key, view.id);
      return view;
    });
  }

  /**
   * Creates the schedule paused, reads the firing times Temporal computed for it (its cron syntax
   * is the server's: seconds fields, ranges, `@every`), and unpauses it only when no two are
   * closer than the minimum interval; otherwise it is deleted before it ever fired.
   */
  private async createSchedule(
    saved: SavedPipeline,
    o: { cron?: string; every?: string; startedBy?: RunStarter },
    everyMs: number | undefined,
    input: ResolvedSpec,
  ): Promise<ScheduleView> {
    const name = saved.name;
    const stored: ScheduledPipelineInput = {
      spec: saved.spec,
      taskQueues: { cpu: this.deps.taskQueues.cpu, gpu: this.deps.taskQueues.gpu },
      ...(o.startedBy ? { startedBy: o.startedBy } : {}),
    };
    const id = `${SCHEDULE_PREFIX}${name}/${randomBytes(3).toString('hex')}`;
    const creator = quotaKey(o.startedBy);
    let handle: ScheduleHandle;
    try {
      handle = await this.deps.client.schedule.create({
        scheduleId: id,
        spec: { ...(o.cron ? { cronExpressions: [o.cron] } : {}), ...(everyMs ? { intervals: [{ every: everyMs }] } : {}) },
        action: {
          type: 'startWorkflow',
          workflowType: startScheduledPipelineWorkflow,
          workflowId: `pipeline/${name}/scheduled`,
          taskQueue: this.deps.taskQueues.workflows,
          args: [stored],
          typedSearchAttributes: [
            { key: PipelineNameKey, value: input.pipeline },
            { key: RunStatusKey, value: 'RUNNING' },
            // Its runs count toward the creator's open runs.
            ...(creator ? [{ key: StartedByKey, value: creator }] : []),
          ],
          staticSummary: `${specSummary(input).replace(':', ' (scheduled):')}`,
        },
        state: { paused: true, note: 'checking its firing times' },
        memo: { pipeline: name, cron: o.cron ? [o.cron] : [], every: o.every ? [o.every] : [], ...(creator ? { createdBy: creator } : {}) },
      });
    } catch (e) {
      throw new EngineError('SCHEDULE_INVALID', `could not create the schedule: ${(e as Error).message}`);
    }
    const min = this.deps.quotas.minScheduleIntervalMs;
    let checked = false;
    try {
      const gap = shortestGapMs((await handle.describe()).info.nextActionTimes);
      if (gap < min) {
        const what = [o.cron ? `cron "${o.cron}"` : '', o.every ? `every "${o.every}"` : ''].filter(Boolean).join(' with ');
        throw new EngineError(
          'BAD_ARGUMENT',
          `${what} fires ${formatDuration(gap)} apart; schedules fire at least ${formatDuration(min)} apart (CAPSTAN_MIN_SCHEDULE_INTERVAL)`,
        );
      }
      await handle.unpause('firing times checked');
      checked = true;
    } finally {
      // Refused, or the check itself failed: the paused schedule never fired and goes.
      if (!checked) await handle.delete().catch(() => undefined);
    }
    return describeSchedule(this.deps.client, id);
  }

  /** Capstan's schedules, optionally of one saved pipeline. */
  async schedules(pipeline?: string): Promise<ScheduleView[]> {
    const out: ScheduleView[] = [];
    for await (const s of this.deps.client.schedule.list()) {
      if (!s.scheduleId.startsWith(SCHEDULE_PREFIX)) continue;
      if (pipeline && s.memo?.pipeline !== pipeline) continue;
      try {
        out.push(await describeSchedule(this.deps.client, s.scheduleId));
      } catch (e) {
        // Listing lags behind deletes (e.g. a schedule refused for firing too often, just deleted).
        if (!(e instanceof ScheduleNotFoundError)) throw e;
      }
    }
    return out;
  }

  async pauseSchedule(id: string, paused: boolean): Promise<ScheduleView> {
    if (!id.startsWith(SCHEDULE_PREFIX)) throw notFound(`schedule ${id}`);
    const h = this.deps.client.schedule.getHandle(id);
    try {
      if (paused) await h.pause('paused through the Capstan API');
      else await h.unpause('unpaused through the Capstan API');
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) throw notFound(`schedule ${id}`);
      throw e;
    }
    return describeSchedule(this.deps.client, id);
  }

  /** Deletes a schedule; false when there was none. Runs it started are not touched. */
  async deleteSchedule(id: string): Promise<boolean> {
    if (!id.startsWith(SCHEDULE_PREFIX)) return false;
    try {
      await this.deps.client.schedule.getHandle(id).delete();
      return true;
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) return false;
      throw e;
    }
  }
}

/** `pipeline/<name>/evt-<12 hex>`: the run an event id starts for a saved pipeline. */
function eventRunId(pipeline: string, type: string, eventId: string): string {
  return `pipeline/${pipeline}/evt-${createHash('sha256')
    .update(JSON.stringify([type, eventId]))
    .digest('hex')
    .slice(0, 12)}`;
}
