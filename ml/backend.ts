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
 * `prefer` (from CAPSTAN_TF_BACKEND at the entry point) starts the search at that backend.
 * Loaded once per process.
 */
export function loadTf(opts: { prefer?: BackendName } = {}): Promise<LoadedTf> {
  loaded ??= pick(opts.prefer);
  return loaded;
}

async function pick(prefer?: BackendName): Promise<LoadedTf> {
  const order = prefer ? backendOrder.slice(backendOrder.indexOf(prefer)) : backendOrder;
  const skipped: LoadedTf['skipped'] = [];
  for (const b of order) {
    try {
      const tf = await tryBackend(b);
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
      // The native bindings register the 'tensorflow' backend on import.
      // A non-literal specifier: these optional packages are usually absent, and that is fine.
      const pkg: string = b === 'node-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
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
