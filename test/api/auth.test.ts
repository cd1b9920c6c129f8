import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPERATION_PERMISSIONS } from '../../api/authz.js';
import { allows, ROLES, type Role } from '../../auth/roles.js';
import type { Logger } from '../../lib/logger.js';
import { shoutStage, writeNoteStage } from '../fixtures/plugins/test-stages.js';
import { startTestStack, visibilityCaughtUp, type TestStack } from '../helpers/stack.js';

const lines: string[] = [];
const logger: Logger = {
  debug: () => {},
  info: (m, meta) => void lines.push(`${m} ${JSON.stringify(meta ?? {})}`),
  warn: (m, meta) => void lines.push(`${m} ${JSON.stringify(meta ?? {})}`),
  error: (m, meta) => void lines.push(`${m} ${JSON.stringify(meta ?? {})}`),
};

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ plugins: [writeNoteStage, shoutStage], logger });
});
afterAll(async () => {
  await stack?.close();
});

const spec = { name: 'authz', stages: [{ id: 'w', plugin: 'test:write-note', params: { text: 'x' } }] };
const specText = 'name: authz\nstages:\n  - { id: w, plugin: test:write-note }\n';

/** One request per operation: the smallest document that reaches its resolver. Harmless for every role that may run it. */
const OPERATIONS: Record<string, { query: string; variables?: Record<string, unknown> }> = {
  'Query.run': { query: '{ run(id: "pipeline/none/xxxxx") { id } }' },
  'Query.runs': { query: '{ runs(first: 1) { edges { cursor } } }' },
  'Query.stagePlugins': { query: '{ stagePlugins { name } }' },
  'Query.validatePipeline': { query: 'query($s: PipelineSpecInput!) { validatePipeline(spec: $s) { valid } }', variables: { s: spec } },
  'Query.savedPipelines': { query: '{ savedPipelines { name } }' },
  'Query.savedPipeline': { query: '{ savedPipeline(name: "none") { name } }' },
  'Query.schedules': { query: '{ schedules { id } }' },
  'Query.ledger': { query: '{ ledger(runId: "pipeline/none/xxxxx") { id } }' },
  'Query.roi': { query: '{ roi(pipeline: "none") { cost } }' },
  'Query.models': { query: '{ models { name } }' },
  'Query.model': { query: '{ model(name: "none") { name } }' },
  'Query.predict': { query: '{ predict(model: "none", inputs: [[0]]) { version } }' },
  'Query.tokens': { query: '{ tokens { id } }' },
  'Query.whoami': { query: '{ whoami { role } }' },
  'Query.ledgerPipelines': { query: '{ ledgerPipelines }' },
  'Query.roiByRun': { query: '{ roiByRun(pipeline: "none") { runId } }' },
  'Query.estimateRun': { query: 'query($s: PipelineSpecInput!) { estimateRun(spec: $s) { complete } }', variables: { s: spec } },
  'Query.roiAlerts': { query: '{ roiAlerts { id } }' },
  'Mutation.startPipeline': { query: 'mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }', variables: { s: spec } },
  'Mutation.startPipelineFromText': { query: 'mutation($t: String!) { startPipelineFromText(text: $t) { id } }', variables: { t: specText } },
  'Mutation.retryStage': { query: 'mutation { retryStage(runId: "pipeline/none/xxxxx", stageId: "w") { id } }' },
  'Mutation.skipStage': { query: 'mutation { skipStage(runId: "pipeline/none/xxxxx", stageId: "w") { id } }' },
  'Mutation.abortRun': { query: 'mutation { abortRun(runId: "pipeline/none/xxxxx", reason: "r") { id } }' },
  'Mutation.cancelRun': { query: 'mutation { cancelRun(runId: "pipeline/none/xxxxx") { id } }' },
  'Mutation.resumeRun': { query: 'mutation { resumeRun(runId: "pipeline/none/xxxxx", dryRun: true) { plan { from } } }' },
  'Mutation.savePipeline': {
    query: 'mutation($s: PipelineSpecInput!) { savePipeline(spec: $s) { name } }',
    variables: { s: { ...spec, name: 'authz-saved' } },
  },
  'Mutation.deleteSavedPipeline': { query: 'mutation { deleteSavedPipeline(name: "none") }' },
  'Mutation.schedulePipeline': { query: 'mutation { schedulePipeline(name: "none", every: "1h") { id } }' },
  'Mutation.pauseSchedule': { query: 'mutation { pauseSchedule(id: "capstan/none/000000") { id } }' },
  'Mutation.deleteSchedule': { query: 'mutation { deleteSchedule(id: "capstan/none/000000") }' },
  'Mutation.emitEvent': { query: 'mutation { emitEvent(type: "authz.none") { id } }' },
  'Mutation.promoteModel': { query: 'mutation { promoteModel(name: "none", version: 1) { name } }' },
  'Mutation.rollbackModel': { query: 'mutation { rollbackModel(name: "none", version: 1) { name } }' },
  'Mutation.setModelOwner': { query: 'mutation { setModelOwner(name: "none", tokenId: "000000000000") { tokenId } }' },
  'Mutation.setModelPromotionPolicy': { query: 'mutation { setModelPromotionPolicy(name: "none", requireChampionChallenger: true) { name } }' },
  'Mutation.createToken': { query: 'mutation { createToken(name: "made-in-test", role: VIEWER) { info { id } } }' },
  'Mutation.revokeToken': { query: 'mutation { revokeToken(id: "000000000000") { id } }' },
  'Mutation.raiseBudget': { query: 'mutation { raiseBudget(runId: "pipeline/none/xxxxx", max: "1.00") { id } }' },
  'Mutation.checkRoiWatches': { query: 'mutation { checkRoiWatches { model } }' },
  'Subscription.runEvents': { query: 'subscription { runEvents(runId: "pipeline/none/xxxxx") { seq } }' },
};
const PREDICT_ROUTE = 'POST /models/:name/predict';
/** The secret part of `cap_<12 hex id>_<secret>` (the secret is base64url, which may itself contain `_`). */
const secretOf = (token: string) => token.slice('cap_'.length + 12 + 1);

/** Sends one operation (subscriptions over SSE) and returns the HTTP status and the first error code, if any. */
async function call(op: string, token: string | null): Promise<{ status: number; code: string | undefined; body: string }> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(token !== null ? { authorization: `Bearer ${token}` } : {}) };
  if (op === PREDICT_ROUTE) {
    const res = await fetch(`${stack.url}/models/none/predict`, { method: 'POST', headers, body: JSON.stringify({ inputs: [[0]] }) });
    const body = await res.text();
    return {
      status: res.status,
      code:
        (JSON.parse(body) as { error?: { code?: string }; errors?: { extensions?: { code?: string } }[] }).error?.code ??
        JSON.parse(body).errors?.[0]?.extensions?.code,
      body,
    };
  }
  const { query, variables } = OPERATIONS[op]!;
  const sse = op.startsWith('Subscription.');
  const res = await fetch(`${stack.url}/graphql`, {
    method: 'POST',
    headers: { ...headers, ...(sse ? { accept: 'text/event-stream' } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.text();
  let json: { errors?: { extensions?: { code?: string } }[] } = {};
  if (sse && res.headers.get('content-type')?.includes('text/event-stream')) {
    const first = body.split('\n').find((l) => l.startsWith('data: ') && l.length > 7);
    json = first ? JSON.parse(first.slice(6)) : {};
  } else json = JSON.parse(body);
  return { status: res.status, code: json.errors?.[0]?.extensions?.code, body };
}

function needOf(op: string) {
  if (op === PREDICT_ROUTE) return 'predict' as const;
  const [type, field] = op.split('.') as ['Query' | 'Mutation' | 'Subscription', string];
  return OPERATION_PERMISSIONS[type][field]!;
}

describe('tokens and roles on every operation', () => {
  it('the table covers every operation the schema has', () => {
    const declared = Object.entries(OPERATION_PERMISSIONS).flatMap(([t, fields]) => Object.keys(fields).map((f) => `${t}.${f}`));
    expect(Object.keys(OPERATIONS).sort()).toEqual(declared.sort());
  });

  it('every operation × every role: allowed roles get through, the others are FORBIDDEN and nothing is done', async () => {
    const tokens = Object.fromEntries(await Promise.all(ROLES.map(async (r) => [r, await stack.token(r, `table-${r}`)] as const))) as Record<Role, string>;
    const ops = [...Object.keys(OPERATIONS), PREDICT_ROUTE];
    const rows: string[] = [];
    let forbidden = 0;
    let allowed = 0;
    for (const op of ops) {
      const need = needOf(op);
      const cells: string[] = [];
      for (const role of ROLES) {
        const r = await call(op, tokens[role]);
        const may = need === 'any' || allows(role, need);
        if (may) {
          allowed++;
          expect(r.code, `${op} as ${role}: ${r.body}`).not.toBe('FORBIDDEN');
          expect(r.code, `${op} as ${role}`).not.toBe('UNAUTHENTICATED');
        } else {
          forbidden++;
          expect(r.code, `${op} as ${role}: ${r.body}`).toBe('FORBIDDEN');
          expect(r.body, `${op} as ${role}`).toMatch(/needs the .* role/);
        }
        cells.push(`${role}:${may ? 'ok' : 'FORBIDDEN'}`);
      }
      rows.push(`${op.padEnd(36)} ${cells.join('  ')}`);
    }
    console.info(`[authz] ${ops.length} operations × ${ROLES.length} roles: ${allowed} allowed, ${forbidden} forbidden\n${rows.join('\n')}`);
    // Nothing was done for a forbidden role: only operator and admin started runs (two each: spec and text).
    await visibilityCaughtUp(stack.client); // visibility is eventually consistent
    const started = await stack.client.workflow.count(`CapstanPipeline = 'authz'`);
    expect(started.count).toBe(4);
    const made = (await stack.gql('{ tokens { name } }')).data.tokens.filter((t: { name: string }) => t.name === 'made-in-test');
    expect(made).toHaveLength(1); // by the admin only
  });

  it('no token, a malformed, an unknown, an expired and a revoked token: UNAUTHENTICATED (401) on every operation, logged without the token', async () => {
    const unknown = `cap_0123456789ab_${'A'.repeat(43)}`;
    const expiring = (await stack.runtime.tokens.create({ name: 'expiring', role: 'admin', expiresAt: new Date(Date.now() + 1000) })).token;
    const revoked = await stack.token('admin', 'to-revoke');
    const id = revoked.split('_')[1]!;
    expect((await stack.gql(`mutation { revokeToken(id: "${id}") { active revokedAt } }`)).data.revokeToken.active).toBe(false);
    await new Promise((r) => setTimeout(r, 1100)); // fixed-sleep-ok: lets the 1 s token expire by time
    const cases: [string, string | null][] = [
      ['none', null],
      ['malformed', 'not-a-token'],
      ['unknown', unknown],
      ['expired', expiring],
      ['revoked', revoked],
    ];
    const ops = [...Object.keys(OPERATIONS), PREDICT_ROUTE];
    lines.length = 0;
    for (const [what, token] of cases) {
      for (const op of ops) {
        const r = await call(op, token);
        expect(r.status, `${op} with ${what} token: ${r.body}`).toBe(401);
        expect(r.code, `${op} with ${what} token`).toBe('UNAUTHENTICATED');
      }
    }
    console.info(`[authn] ${cases.length} token states × ${ops.length} operations: all 401 UNAUTHENTICATED`);
    expect(lines.filter((l) => l.startsWith('request refused'))).toHaveLength(cases.length * ops.length);
    for (const t of [unknown, expiring, revoked]) {
      expect(lines.join('\n')).not.toContain(secretOf(t));
    }
    expect(lines.some((l) => l.includes('token expired'))).toBe(true);
    expect(lines.some((l) => l.includes('token revoked'))).toBe(true);
  });

  it('tokens are stored as hashes only, listed without secrets, and a created token works at once', async () => {
    const created = (await stack.gql('mutation { createToken(name: "ci", role: OPERATOR) { token info { id name role active expiresAt } } }')).data.createToken;
    expect(created.info).toMatchObject({ name: 'ci', role: 'OPERATOR', active: true, expiresAt: null });
    const rows = await stack.db.query<Record<string, unknown>>('SELECT * FROM api_tokens');
    expect(secretOf(created.token)).toHaveLength(43);
    expect(JSON.stringify(rows)).not.toContain(secretOf(created.token));
    expect(JSON.stringify((await stack.gql('{ tokens { id name role } }')).data)).not.toContain(secretOf(created.token));
    expect((await stack.gql('{ whoami { name role } }', {}, created.token)).data.whoami).toEqual({ name: 'ci', role: 'OPERATOR' });
    const bad = await stack.gql('mutation { createToken(name: "x", role: VIEWER, expiresAt: "2001-01-01T00:00:00Z") { token } }');
    expect(bad.errors![0]!.extensions.code).toBe('BAD_ARGUMENT');
  });
});
