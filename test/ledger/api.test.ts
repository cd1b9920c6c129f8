import { randomUUID } from 'node:crypto';
import { GraphQLScalarType } from 'graphql';
import { createSchema, createYoga } from 'graphql-yoga';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiContext } from '../../api/module.js';
import { ledgerModule } from '../../api/modules/ledger.js';
import { ledgerMigrations } from '../../ledger/migrations.js';
import { migrate } from '../../lib/db/migrate.js';
import { silentLogger } from '../../lib/logger.js';
import { createLedgerService, createPredictionsHook, type LedgerService } from '../../ledger/meter.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { createTestDatabase, dialects, type TestDatabase } from './dbs.js';

// The lead's core module defines these; a stand-in keeps this test about the ledger module.
const baseTypeDefs = /* GraphQL */ `
  scalar DateTime
  type PipelineRun { id: ID! pipeline: String! }
  type Query { run(id: ID!): PipelineRun }
`;
const dateTime = new GraphQLScalarType({
  name: 'DateTime',
  serialize: (v) => (v instanceof Date ? v.toISOString() : v),
  parseValue: (v) => new Date(String(v)),
});

const sheet = parsePriceSheet({ currency: 'EUR', compute: { cpuHour: '0.05', gpuHour: '2.00' }, storage: { gbMonth: '0.02', retentionMonths: 1 } });

describe.each(dialects)('ledger GraphQL on %s', (dialect) => {
  let t: TestDatabase;
  let ledger: LedgerService;
  let gql: (query: string, variables?: Record<string, unknown>) => Promise<{ data?: any; errors?: any[] }>;

  beforeAll(async () => {
    t = await createTestDatabase(dialect);
    await migrate(t.db, ledgerMigrations);
    const ctx = { db: t.db, logger: silentLogger } as unknown as ApiContext;
    const mod = ledgerModule;
    ledger = createLedgerService(t.db, { priceSheet: sheet });
    const yoga = createYoga<object, ApiContext>({
      schema: createSchema<ApiContext>({
        typeDefs: [baseTypeDefs, mod.typeDefs],
        resolvers: [{ DateTime: dateTime, Query: { run: (_: unknown, a: { id: string }) => ({ id: a.id, pipeline: 'p' }) } }, mod.resolvers] as never,
      }),
      context: () => ctx,
      logging: false,
    });
    gql = async (query, variables) => {
      const res = await yoga.fetch('http://test/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as { data?: any; errors?: any[] };
    };
  });
  afterAll(async () => t?.drop());

  it('answers ledger(runId), roi(pipeline, from, to) and PipelineRun.roi with exact decimal strings', async () => {
    const pipeline = `api-${randomUUID().slice(0, 8)}`;
    const runA = `pipeline/${pipeline}/a`;
    const runB = `pipeline/${pipeline}/b`;
    for (const runId of [runA, runB]) {
      await ledger.recordUsage({
        runId,
        pipeline,
        stageId: 'fit',
        plugin: 'core:multi-device-fit',
        attempt: 1,
        replica: 0,
        resource: 'gpu',
        gpuDevices: ['0'],
        wallSeconds: 1800,
        cpuSeconds: 0,
        deviceSeconds: 1800,
        bytesWritten: 500_000_000,
        succeeded: true,
      });
      await ledger.recordUsage({
        runId,
        pipeline,
        stageId: 'prep',
        plugin: 'core:data-prep',
        attempt: 1,
        resource: 'cpu',
        wallSeconds: 36,
        cpuSeconds: 36,
        deviceSeconds: 36,
        bytesWritten: 0,
        succeeded: true,
      });
    }
    await ledger.bookRun({
      runId: runA,
      pipeline,
      stageId: 'roi',
      costs: [{ category: 'people', description: 'review', hours: '1', hourlyRate: '0.9895' }],
      revenue: { kind: 'contract', value: '4.00' },
    });
    await ledger.bookRun({
      runId: runB,
      pipeline,
      stageId: 'roi',
      revenue: { kind: 'per-prediction', pricePer1000: '0.20', expectedPredictions: 5000, horizonDays: 30 },
    });
    const hook = createPredictionsHook(t.db, { resolveRunId: async (model, version) => (model === 'digits' && version === 2 ? runB : undefined) });
    await hook('digits', 2, 2500);
    await expect(hook('digits', 9, 1)).rejects.toThrow(/no run is known/);

    const entries = await gql(`query($id: ID!) { ledger(runId: $id) { id kind category amount currency stageId reverses bookedAt } }`, { id: runA });
    expect(entries.errors).toBeUndefined();
    const cats = entries.data.ledger.map((e: any) => `${e.kind}:${e.category}:${e.amount}`).sort();
    // gpu 0.5 h × 2 = 1.00; storage 0.5 GB × 0.02 = 0.01; cpu 36 s × 0.05/h = 0.0005; people 0.9895
    expect(cats).toEqual(['COST:cpu:0.0005', 'COST:gpu:1.00', 'COST:people:0.9895', 'COST:storage:0.01', 'EXPECTED_REVENUE:contract:4.00']);
    expect(entries.data.ledger[0].currency).toBe('EUR');

    const run = await gql(`query($id: ID!) { run(id: $id) { id roi { currency cost revenue roi realisedRevenue realisedRoi explanation } } }`, { id: runA });
    expect(run.data.run.roi).toEqual({
      currency: 'EUR',
      cost: '2.00',
      revenue: '4.00',
      roi: '1.0000',
      realisedRevenue: '0.00',
      realisedRoi: '-1.0000',
      explanation: null,
    });
    const runBView = await gql(`query($id: ID!) { run(id: $id) { roi { cost revenue roi realisedRevenue realisedRoi } } }`, { id: runB });
    expect(runBView.data.run.roi).toEqual({ cost: '1.0105', revenue: '1.00', roi: '-0.0104', realisedRevenue: '0.50', realisedRoi: '-0.5052' });
    const none = await gql(`{ run(id: "pipeline/none/x") { roi { cost } } }`);
    expect(none.data.run.roi).toBeNull();

    const report = await gql(
      `query($p: String!) { roi(pipeline: $p) { pipeline runs currency cost revenue roi realisedRevenue byStage { key cost } byResource { key cost } } }`,
      { p: pipeline },
    );
    expect(report.errors).toBeUndefined();
    expect(report.data.roi).toEqual({
      pipeline,
      runs: 2,
      currency: 'EUR',
      cost: '3.0105',
      revenue: '5.00',
      roi: '0.6609',
      realisedRevenue: '0.50',
      byStage: [
        { key: 'fit', cost: '2.02' },
        { key: 'prep', cost: '0.001' },
        { key: 'roi', cost: '0.9895' },
      ],
      byResource: [
        { key: 'cpu', cost: '0.001' },
        { key: 'gpu', cost: '2.00' },
        { key: 'people', cost: '0.9895' },
        { key: 'storage', cost: '0.02' },
      ],
    });
    const future = await gql(`query($p: String!) { roi(pipeline: $p, from: "2999-01-01T00:00:00Z") { runs cost roi explanation } }`, { p: pipeline });
    expect(future.data.roi).toEqual({ runs: 0, cost: '0.00', roi: null, explanation: expect.stringMatching(/cost is zero/) });
    const bad = await gql(`query($p: String!) { roi(pipeline: $p, from: "2030-01-02T00:00:00Z", to: "2030-01-01T00:00:00Z") { runs } }`, { p: pipeline });
    expect(bad.errors?.[0]?.extensions?.code).toBe('BAD_INPUT');
  });
});
