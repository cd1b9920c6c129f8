import path from 'node:path';
import { z } from 'zod';

/** Environment of a Capstan process, parsed once at the entry point and injected. */
export const envSchema = z.object({
  CAPSTAN_DATA_DIR: z.string().default('.data'),
  CAPSTAN_ARTIFACTS_DIR: z.string().optional(),
  DATABASE_URL: z.string().optional(),
  /** Prefix of the task queues: `<p>` for workflows, `<p>-cpu` and `<p>-gpu` for stages. */
  CAPSTAN_TASK_QUEUE: z.string().regex(/^[A-Za-z0-9._-]+$/).default('capstan'),
  /** What this worker serves: any of workflows, cpu, gpu. */
  CAPSTAN_WORKER_ROLES: z
    .string()
    .default('workflows,cpu,gpu')
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .pipe(z.array(z.enum(['workflows', 'cpu', 'gpu'])).min(1)),
  CAPSTAN_API_HOST: z.string().default('127.0.0.1'),
  CAPSTAN_API_PORT: z.coerce.number().int().min(0).max(65535).default(4000),
  /** Extra stage plugins: files, folders or npm packages, separated by commas. */
  CAPSTAN_PLUGINS: z.string().default(''),
  CAPSTAN_TF_BACKEND: z.enum(['node-gpu', 'node', 'wasm', 'cpu']).optional(),
  CAPSTAN_PRICE_SHEET: z.string().optional(),
  CAPSTAN_SHUTDOWN_GRACE: z.string().default('30s'),
  CAPSTAN_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  CAPSTAN_ACTIVITY_SLOTS: z.coerce.number().int().min(1).max(64).default(4),
  CAPSTAN_GPU_SLOTS: z.coerce.number().int().min(1).max(64).default(2),
  /** Base URL of the Temporal Web UI, for links to runs (the dev stack sets it). */
  CAPSTAN_TEMPORAL_UI_URL: z.string().url().optional(),
});

export interface CapstanConfig {
  dataDir: string;
  artifactsDir: string;
  sqlitePath: string;
  databaseUrl?: string;
  taskQueues: { workflows: string; cpu: string; gpu: string };
  workerRoles: ('workflows' | 'cpu' | 'gpu')[];
  api: { host: string; port: number };
  plugins: string[];
  tfBackend?: 'node-gpu' | 'node' | 'wasm' | 'cpu';
  priceSheetPath?: string;
  shutdownGrace: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  activitySlots: number;
  gpuSlots: number;
  temporalUiUrl?: string;
  cwd: string;
}

export function loadConfig(env: NodeJS.ProcessEnv, cwd: string): CapstanConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new Error(`bad configuration in the environment:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  const dataDir = path.resolve(cwd, e.CAPSTAN_DATA_DIR);
  const q = e.CAPSTAN_TASK_QUEUE;
  return {
    dataDir,
    artifactsDir: path.resolve(cwd, e.CAPSTAN_ARTIFACTS_DIR ?? path.join(dataDir, 'artifacts')),
    sqlitePath: path.join(dataDir, 'capstan.db'),
    ...(e.DATABASE_URL ? { databaseUrl: e.DATABASE_URL } : {}),
    taskQueues: { workflows: q, cpu: `${q}-cpu`, gpu: `${q}-gpu` },
    workerRoles: e.CAPSTAN_WORKER_ROLES,
    api: { host: e.CAPSTAN_API_HOST, port: e.CAPSTAN_API_PORT },
    plugins: e.CAPSTAN_PLUGINS.split(',').map((s) => s.trim()).filter(Boolean),
    ...(e.CAPSTAN_TF_BACKEND ? { tfBackend: e.CAPSTAN_TF_BACKEND } : {}),
    ...(e.CAPSTAN_PRICE_SHEET ? { priceSheetPath: path.resolve(cwd, e.CAPSTAN_PRICE_SHEET) } : {}),
    shutdownGrace: e.CAPSTAN_SHUTDOWN_GRACE,
    logLevel: e.CAPSTAN_LOG_LEVEL,
    activitySlots: e.CAPSTAN_ACTIVITY_SLOTS,
    gpuSlots: e.CAPSTAN_GPU_SLOTS,
    ...(e.CAPSTAN_TEMPORAL_UI_URL ? { temporalUiUrl: e.CAPSTAN_TEMPORAL_UI_URL.replace(/\/$/, '') } : {}),
    cwd,
  };
}
