import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';

export type BackendName = 'node-gpu' | 'node' | 'wasm' | 'cpu';
export const backendOrder: BackendName[] = ['node-gpu', 'node', 'wasm', 'cpu'];

export interface LoadedTf {
  tf: typeof TF;
  /** Which of our backends loaded. */
  backend: BackendName;
  /** Why the better backends did not load (empty when the first choice worked). */
  skipped: { backend: BackendName; reason: string }[];
}

const require = createRequire(import.meta.url);
let loaded: Promise<LoadedTf> | undefined;

/**
 * Loads TensorFlow.js on the best backend that works here: node-gpu → node → wasm → cpu.
 * `prefer` (from CAPSTAN_TF_BACKEND at the entry point) starts the search at that backend;
 * without it, CAPSTAN_TF_BACKEND in this process's environment does (so child processes and
 * test projects that only set the environment get the same backend). Loaded once per process.
 */
export function loadTf(opts: { prefer?: BackendName } = {}): Promise<LoadedTf> {
  loaded ??= pick(opts.prefer ?? backendFromEnv());
  return loaded;
}

/** CAPSTAN_TF_BACKEND, checked; undefined when unset. */
export function backendFromEnv(env: NodeJS.ProcessEnv = process.env): BackendName | undefined {
  const v = env.CAPSTAN_TF_BACKEND;
  if (!v) return undefined;
  if (!(backendOrder as string[]).includes(v)) throw new Error(`CAPSTAN_TF_BACKEND must be one of ${backendOrder.join(', ')}; got ${JSON.stringify(v)}`);
  return v as BackendName;
}

/** The npm package behind a native backend. */
export const nativePackages = { 'node-gpu': '@tensorflow/tfjs-node-gpu', node: '@tensorflow/tfjs-node' } as const;

/**
 * Where the package's loader expects the addon (lib/napi-v8/tfjs_binding.node), or why it is
 * not there. `npm run setup:native` builds it against PyPI's TensorFlow C library.
 */
export function nativeBinding(b: 'node-gpu' | 'node'): { path: string } | { missing: string } {
  const pkg = nativePackages[b];
  let dir: string;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    return { missing: `${pkg} is not installed (an optional dependency; npm ci installs it)` };
  }
  const file = path.join(dir, 'lib', 'napi-v8', 'tfjs_binding.node');
  if (!existsSync(file)) return { missing: `${pkg} has no native binding: run \`npm run setup:native${b === 'node-gpu' ? ' -- --gpu' : ''}\`` };
  return { path: file };
}

/** A cheap look for an NVIDIA GPU this process may use, before loading CUDA-enabled TensorFlow. */
function nvidiaGpuVisible(): string | undefined {
  const cvd = process.env.CUDA_VISIBLE_DEVICES;
  if (cvd !== undefined && (cvd.trim() === '' || cvd.trim() === '-1')) return `CUDA_VISIBLE_DEVICES=${JSON.stringify(cvd)} hides every GPU`;
  try {
    if (readdirSync('/dev').some((f) => /^nvidia\d+$/.test(f))) return undefined;
  } catch {
    // fall through
  }
  return 'no NVIDIA GPU visible (no /dev/nvidia<N>)';
}

async function pick(prefer?: BackendName): Promise<LoadedTf> {
  const order = prefer ? backendOrder.slice(backendOrder.indexOf(prefer)) : backendOrder;
  const skipped: LoadedTf['skipped'] = [];
  for (const b of order) {
    try {
      const tf = await tryBackend(b);
      if (b === 'node-gpu' && !(tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice) {
        // The CUDA build loaded but TensorFlow found no usable GPU: it computes on the CPU, which is
        // what the node backend is. Say so rather than claim a GPU.
        skipped.push({ backend: 'node-gpu', reason: 'TensorFlow found no usable GPU device; the CUDA build runs on the CPU' });
        return { tf, backend: 'node', skipped };
      }
      return { tf, backend: b, skipped };
    } catch (e) {
      skipped.push({ backend: b, reason: e instanceof Error ? e.message.split('\n')[0]! : String(e) });
    }
  }
  throw new Error(`no TensorFlow.js backend loaded: ${skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ')}`);
}

async function tryBackend(b: BackendName): Promise<typeof TF> {
  switch (b) {
    case 'node-gpu':
    case 'node': {
      // The native bindings register the 'tensorflow' backend on import. npm installs the packages
      // without their install script (it downloads from a host we cannot reach); the binding
      // comes from `npm run setup:native`, so look for it before importing.
      if (b === 'node-gpu') {
        const why = nvidiaGpuVisible();
        if (why) throw new Error(why);
      }
      const binding = nativeBinding(b);
      if ('missing' in binding) throw new Error(binding.missing);
      // TensorFlow's C++ logging: hide its INFO/WARNING banner (CPU features, …) unless asked for.
      process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
      // A non-literal specifier: these optional packages may be absent, and that is fine.
      const pkg: string = nativePackages[b];
      const tf = (await import(pkg)) as typeof TF;
      if (!(await tf.setBackend('tensorflow'))) throw new Error('tensorflow backend did not initialise');
      await tf.ready();
      return tf;
    }
    case 'wasm': {
      const tf = await import('@tensorflow/tfjs');
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
      wasm.setWasmPaths(dist + path.sep);
      if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend did not initialise');
      await tf.ready();
      return tf;
    }
    case 'cpu': {
      const tf = await import('@tensorflow/tfjs');
      if (!(await tf.setBackend('cpu'))) throw new Error('cpu backend did not initialise');
      await tf.ready();
      return tf;
    }
  }
}
