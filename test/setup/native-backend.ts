// Setup file of the 'native' vitest project: every test file in it fails unless TensorFlow.js
// really runs on the native 'tensorflow' backend — never a silent fallback to wasm.
import { beforeAll } from 'vitest';
import { loadTf } from '../../ml/backend.js';

beforeAll(async () => {
  const { tf, backend, skipped } = await loadTf();
  if (backend !== 'node' || tf.getBackend() !== 'tensorflow') {
    throw new Error(
      `the native test project needs the 'tensorflow' backend (CAPSTAN_TF_BACKEND=node) but got ${backend}/${tf.getBackend()}: ` +
        `${skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ')}`,
    );
  }
});
