// The console logger's two formats, the log context (nesting, what async work inherits), relaying a
// child's lines, and the Temporal SDK's entries mapped onto our ids.
import { context, trace, TraceFlags } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { describe, expect, it } from 'vitest';
import { sdkMeta } from '../../app/sdk-logs.js';
import { createConsoleLogger, fatalLine, parseLogLine, readableLogLine, relayLogLine, type LogFormat } from '../../lib/logger.js';
import { addLogContext, logContext, logContextEnv, logContextFromEnv, withLogContext } from '../../lib/telemetry/log-context.js';
import { setTraceHooks } from '../../lib/telemetry/trace-context.js';
import { otelTraceHooks } from '../../lib/telemetry/tracing.js';

function capture(format: LogFormat, level: 'debug' | 'info' = 'debug') {
  const lines: string[] = [];
  const logger = createConsoleLogger({ name: 'test', level, format, write: (l) => void lines.push(l) });
  return { logger, lines, json: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const TOKEN = `cap_0123456789ab_${'A'.repeat(43)}`;

describe('console logger', () => {
  it('writes JSON lines with time, level, logger, msg, meta and the context ids', async () => {
    const { logger, lines, json } = capture('json');
    logger.info('outside');
    await withLogContext({ runId: 'pipeline/p/1', stageId: 'train' }, async () => {
      await new Promise((r) => setTimeout(r, 1)); // fixed-sleep-ok: a real timer turn inside the context, which must survive it
      await withLogContext({ attempt: 2, plugin: 'core:pretrain@1.0.0' }, async () => logger.warn('inner', { epochs: 3 }));
      logger.info('outer again');
    });
    expect(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    const [outside, inner, outer] = json();
    expect(outside).toEqual({ time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/), level: 'info', logger: 'test', msg: 'outside' });
    expect(inner).toMatchObject({
      level: 'warn',
      msg: 'inner',
      epochs: 3,
      run_id: 'pipeline/p/1',
      stage_id: 'train',
      attempt: 2,
      plugin: 'core:pretrain@1.0.0',
    });
    expect(outer).toMatchObject({ run_id: 'pipeline/p/1', stage_id: 'train' });
    expect(outer).not.toHaveProperty('attempt');
    expect(Object.keys(inner!).slice(0, 4)).toEqual(['time', 'level', 'logger', 'msg']);
  });

  it("keeps today's text lines", () => {
    const { logger, lines } = capture('text');
    withLogContext({ runId: 'pipeline/p/1' }, () => logger.info('worker up', { plugins: ['a@1'] }));
    logger.error('plain');
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z INFO {2}\[test\] worker up \{"plugins":\["a@1"\]\}\n$/);
    expect(lines[1]).toMatch(/^\S+Z ERROR \[test\] plain\n$/);
  });

  it('filters by level, keeps reserved fields, serialises errors with their stack only when debugging', () => {
    const info = capture('json', 'info');
    info.logger.debug('hidden');
    const err = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    info.logger.error('write failed', { error: err, level: 'meta level', big: 10n });
    expect(info.json().slice(0, 1)).toEqual([
      {
        time: expect.any(String),
        level: 'error',
        logger: 'test',
        msg: 'write failed',
        error: { message: 'disk full', code: 'ENOSPC' },
        meta_level: 'meta level',
        big: '10',
      },
    ]);
    info.logger.warn('Activity failed', { error: Object.assign(new Error('bad hash'), { name: 'ApplicationFailure', type: 'ARTIFACT_CORRUPT' }) });
    expect(info.json()[1]).toMatchObject({ error: { message: 'bad hash', name: 'ApplicationFailure', type: 'ARTIFACT_CORRUPT' } });
    const debug = capture('json', 'debug');
    debug.logger.error('write failed', { error: err });
    expect((debug.json()[0]!.error as { stack: string }).stack).toContain('disk full');
  });

  it('never prints a token: secret meta keys, tokens and bearer credentials in text are redacted', () => {
    for (const format of ['json', 'text'] as const) {
      const { logger, lines } = capture(format);
      logger.warn(`refused ${TOKEN}`, {
        token: 'abc',
        authorization: `Bearer ${TOKEN}`,
        note: `header was Bearer xyz123`,
        error: new Error(`bad ${TOKEN}`),
        tokenId: '0123456789ab',
      });
      const out = lines.join('');
      expect(out).not.toContain('A'.repeat(43));
      expect(out).not.toContain('xyz123');
      expect(out).not.toContain('"abc"');
      expect(out).toContain('cap_0123456789ab_[redacted]');
      expect(out).toContain('0123456789ab');
    }
  });

  it("adds the active span's trace and span ids while tracing runs, and none without a span or with tracing off", () => {
    const { logger, json } = capture('json');
    // What the tracing setup registers (sdk-node does so when tracing is on), and the hooks it installs.
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    const span = trace.wrapSpanContext({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED });
    try {
      setTraceHooks(otelTraceHooks);
      context.with(trace.setSpan(context.active(), span), () => logger.info('in a span'));
      logger.info('no span active');
      setTraceHooks(undefined);
      context.with(trace.setSpan(context.active(), span), () => logger.info('tracing off'));
    } finally {
      setTraceHooks(undefined);
      context.disable();
    }
    expect(json()[0]).toMatchObject({ trace_id: '0af7651916cd43dd8448eb211c80319c', span_id: 'b7ad6b7169203331' });
    expect(json()[1]).not.toHaveProperty('trace_id');
    expect(json()[2]).not.toHaveProperty('trace_id');
  });

  it('addLogContext adds to the current context only', async () => {
    const { logger, json } = capture('json');
    addLogContext({ operation: 'nowhere' });
    expect(logContext()).toEqual({});
    await withLogContext({ requestId: 'r1' }, async () => {
      addLogContext({ operation: 'startPipeline' });
      await Promise.resolve();
      logger.info('in request');
    });
    await withLogContext({ requestId: 'r2' }, async () => logger.info('other request'));
    expect(json()[0]).toMatchObject({ request_id: 'r1', operation: 'startPipeline' });
    expect(json()[1]).toMatchObject({ request_id: 'r2' });
    expect(json()[1]).not.toHaveProperty('operation');
  });

  it('hands the context to a child through its environment, dropping what is malformed', () => {
    const env = withLogContext({ runId: 'pipeline/p/1', stageId: 's', attempt: 3 }, () => logContextEnv());
    expect(logContextFromEnv(env.CAPSTAN_LOG_CONTEXT)).toEqual({ runId: 'pipeline/p/1', stageId: 's', attempt: 3 });
    expect(logContextEnv()).toEqual({});
    expect(logContextFromEnv('{"runId":5,"stageId":"x","attempt":"2"}')).toEqual({ stageId: 'x' });
    expect(logContextFromEnv('not json')).toEqual({});
  });

  it("relays a child's JSON lines at their level with their fields, anything else at debug", () => {
    const { logger, json } = capture('json');
    withLogContext({ runId: 'pipeline/p/1', attempt: 1 }, () => {
      relayLogLine(
        logger,
        JSON.stringify({
          time: 't',
          level: 'info',
          logger: 'training',
          msg: 'training job pretrain started',
          pid: 7,
          run_id: 'pipeline/p/1',
          stage_id: 'pretrain',
          span_id: 'child-span',
        }),
      );
      relayLogLine(logger, 'Hi there 👋. Looks like you are running TensorFlow.js');
      relayLogLine(logger, '{"not":"a log line"}');
    });
    const [relayed, plain, other] = json();
    expect(relayed).toMatchObject({
      level: 'info',
      logger: 'test',
      msg: 'training job pretrain started',
      source: 'training',
      pid: 7,
      run_id: 'pipeline/p/1',
      attempt: 1,
      span_id: 'child-span',
    });
    // An id the context does not give is kept from the child's line.
    expect(relayed).toMatchObject({ stage_id: 'pretrain' });
    const text = capture('text');
    withLogContext({ runId: 'pipeline/p/1' }, () => relayLogLine(text.logger, JSON.stringify({ level: 'info', msg: 'm', run_id: 'pipeline/p/1', n: 1 })));
    expect(text.lines[0]).toMatch(/ INFO {2}\[test\] m \{"n":1\}\n$/);
    expect(plain).toMatchObject({ level: 'debug', msg: 'Hi there 👋. Looks like you are running TensorFlow.js', run_id: 'pipeline/p/1' });
    expect(other).toMatchObject({ level: 'debug', msg: '{"not":"a log line"}' });
    expect(readableLogLine(JSON.stringify({ level: 'error', msg: 'training job failed', error: { message: 'boom' } }))).toBe('training job failed: boom');
    expect(parseLogLine('plain')).toBeUndefined();
  });

  it("writes an entry point's fatal line in either format", () => {
    const e = new Error('no database');
    expect(fatalLine({ name: 'api', format: 'text', message: 'api failed', error: e })).toMatch(/^api failed: Error: no database\n {4}at /);
    const j = JSON.parse(fatalLine({ name: 'api', format: 'json', message: 'api failed', error: e }));
    expect(j).toMatchObject({
      level: 'error',
      logger: 'api',
      msg: 'api failed',
      error: { message: 'no database', stack: expect.stringContaining('no database') },
    });
  });
});

describe('Temporal SDK entries', () => {
  it("map a pipeline workflow's ids onto run_id (and a stage activity's stage), others onto workflow_id, and drop the task token", () => {
    expect(
      sdkMeta({
        sdkComponent: 'activity',
        workflowId: 'pipeline/p/1',
        workflowRunId: 'uuid',
        workflowType: 'runPipelineWorkflow',
        activityId: 'stage:train#1:replica-0',
        attempt: 2,
        taskToken: 'secret',
        taskQueue: 'q',
      }),
    ).toEqual({
      sdkComponent: 'activity',
      taskQueue: 'q',
      run_id: 'pipeline/p/1',
      workflowType: 'runPipelineWorkflow',
      workflow_run_id: 'uuid',
      activity_id: 'stage:train#1:replica-0',
      stage_id: 'train',
      attempt: 2,
    });
    expect(sdkMeta({ sdkComponent: 'workflow', workflowId: 'slot-keeper/q', runId: 'uuid2', workflowType: 'slotKeeperWorkflow' })).toEqual({
      sdkComponent: 'workflow',
      workflow_id: 'slot-keeper/q',
      workflowType: 'slotKeeperWorkflow',
      workflow_run_id: 'uuid2',
    });
  });
});
