// A real pipeline with its artifacts in S3 (a real SeaweedFS server): stage outputs, pretrain
// checkpoints, the replicas' round files and the registry export all go through the bucket, and
// another host with an empty cache can fetch and hash-check every output.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Seaweed } from '../../dev/seaweed.js';
import { S3ArtifactStore } from '../../lib/artifact-store/s3-store.js';
import { hashTree } from '../../lib/artifacts.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import { multiDeviceFitStage } from '../../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { pruneQuantizeStage } from '../../plugins/core/prune-quantize/index.js';
import { startTestSeaweed } from '../helpers/seaweed.js';
import { startTestStack, waitFor, type TestStack } from '../helpers/stack.js';

const tf = process.env.CAPSTAN_TF_BACKEND ? { tfBackend: process.env.CAPSTAN_TF_BACKEND as 'wasm' } : {};
const BUCKET = 'capstan-pipeline';
const PREFIX = 'team-a/artifacts';

let weed: Seaweed;
let stack: TestStack;
let otherHost: S3ArtifactStore;
beforeAll(async () => {
  weed = await startTestSeaweed();
  stack = await startTestStack({
    plugins: [dataPrepStage(), pretrainStage(tf), pruneQuantizeStage(tf), multiDeviceFitStage(tf), deployStage(tf)],
    env: weed.env(`${BUCKET}/${PREFIX}`),
  });
  otherHost = new S3ArtifactStore({
    location: { bucket: BUCKET, prefix: PREFIX },
    client: new S3Client({
      endpoint: weed.endpoint,
      region: weed.region,
      forcePathStyle: true,
      credentials: { accessKeyId: weed.accessKeyId, secretAccessKey: weed.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    }),
    cacheDir: await mkdtemp(path.join(os.tmpdir(), 'capstan-other-host-')),
  });
});
afterAll(async () => {
  await otherHost?.close();
  await stack?.close();
  await weed?.stop();
});

const RUN = `id status stages { id status attempts metrics error outputs { kind uri sha256 bytes } }`;

describe('a pipeline on an S3 artifact store (SeaweedFS)', () => {
  it('runs data → pretrain → prune → 2-replica fit → deploy with every artifact in the bucket, and serves the model', async () => {
    expect(stack.artifacts.describe()).toContain(`s3://${BUCKET}/${PREFIX}`);
    const spec = {
      name: 'mnist-s3',
      stages: [
        { id: 'data', plugin: 'core:data-prep', params: { source: { format: 'mnist' }, limit: 2000, seed: 7 } },
        { id: 'pretrain', plugin: 'core:pretrain', params: { epochs: 2 } },
        { id: 'prune', plugin: 'core:prune-quantize', params: { sparsity: 0.5, fineTuneEpochs: 1, quantize: 'none' } },
        { id: 'fit', plugin: 'core:multi-device-fit', params: { replicas: 2, epochs: 1, syncEverySteps: 10 } },
        { id: 'deploy', plugin: 'core:deploy', params: { modelName: 'mnist-s3', quantize: 'uint8', latencyRuns: 10, gates: { minTestAccuracy: 0.3 } } },
        // The same model converted to ONNX: its folder goes through the bucket the same way.
        {
          id: 'deploy-onnx',
          plugin: 'core:deploy',
          needs: ['data', 'fit'],
          params: { modelName: 'mnist-s3-onnx', format: 'onnx', quantize: 'uint8', latencyRuns: 10, gates: { minTestAccuracy: 0.3 } },
        },
      ],
    };
    const started = await stack.gql(`mutation($s: PipelineSpecInput!) { startPipeline(spec: $s) { id } }`, { s: spec });
    expect(started.errors).toBeUndefined();
    const id = started.data.startPipeline.id as string;
    const run = await waitFor(
      async () => {
        const r = (await stack.gql(`query($id: ID!) { run(id: $id) { ${RUN} } }`, { id })).data?.run;
        return r && r.status !== 'RUNNING' ? r : undefined;
      },
      `run ${id} to close`,
      600_000,
      500,
    );
    expect(run.status, JSON.stringify(run.stages.map((s: any) => [s.id, s.status, s.error]))).toBe('COMPLETED');
    const fit = run.stages.find((s: any) => s.id === 'fit');
    expect(fit.metrics.replicas).toBe(2);
    expect(fit.metrics.rounds).toBeGreaterThan(1);

    // Every output is sealed in the bucket, and another host with an empty cache fetches it, hash-checked.
    const outputs = run.stages.flatMap((s: any) => s.outputs);
    expect(outputs.map((o: any) => o.kind)).toEqual(['dataset', 'model', 'model', 'model', 'deployment', 'deployment']);
    expect(run.stages.find((s: any) => s.id === 'deploy-onnx').metrics).toMatchObject({
      format: 'onnx',
      weightFormat: 'uint8',
      runtime: expect.stringMatching(/^onnxruntime-node /),
    });
    for (const ref of outputs) {
      expect(await otherHost.verify(ref)).toEqual({ ok: true });
      const dir = await otherHost.localPath(ref);
      expect((await hashTree(dir)).sha256).toBe(ref.sha256);
    }
    // The registry export is sealed, content-addressed, in the bucket (registry/<model>/sha256-…).
    const seals = (await otherHost.objects.list(`${PREFIX}/.seals/registry/mnist-s3/`)).map((o) => o.key);
    expect(seals.some((k) => /\/sha256-[0-9a-f]{64}\.json$/.test(k))).toBe(true);

    // Checkpoints and the replicas' rounds went through the bucket too.
    const runKey = `${PREFIX}/runs/${id.replace(/[^A-Za-z0-9._-]/g, '_')}`;
    const keys = (await otherHost.objects.list(`${runKey}/`)).map((o) => o.key.slice(runKey.length + 1));
    expect(keys.some((k) => /^pretrain\/_checkpoints\/epoch-\d+\//.test(k))).toBe(true);
    expect(keys.some((k) => /^fit\/_checkpoints\/sync-[0-9a-f]+\/round-\d+\/avg\.bin$/.test(k))).toBe(true);

    // The API's model server loads the deployed version through the store and answers.
    for (const model of ['mnist-s3', 'mnist-s3-onnx']) {
      const res = await fetch(`${stack.url}/models/${model}/predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.adminToken}` },
        body: JSON.stringify({ inputs: [new Array(784).fill(0)] }),
      });
      const body = (await res.json()) as { predictions?: unknown[] };
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body.predictions).toHaveLength(1);
    }

    // The worker's cache can go: the bucket is the truth, and a fetch brings it back.
    await rm(stack.artifacts.root, { recursive: true, force: true });
    const deployment = outputs.find((o: any) => o.kind === 'deployment');
    expect((await hashTree(await stack.artifacts.localPath(deployment))).sha256).toBe(deployment.sha256);
  });
});
