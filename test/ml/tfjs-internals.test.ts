// The private tfjs parts the step loop's fast kernels use (ml/training/tfjs-internals.ts): pinned
// to the version they were checked against, working on the backend this project loads (wasm, or
// the native one in the native project) and on cpu, and failing by name when they are missing.
import type * as TF from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadTf } from '../../ml/backend.js';
import type { Tf } from '../../ml/models/mlp.js';
import { jsBackendInternals, nativeBackendInternals, TFJS_INTERNALS_CHECKED, TfjsInternalsError } from '../../ml/training/tfjs-internals.js';

let tf: Tf;
beforeAll(async () => {
  ({ tf } = await loadTf());
});

/** Writes through a memory view and reads the tensor back through the public API. */
function roundTrip(mem: ReturnType<typeof jsBackendInternals>, t: TF.Tensor): number[] {
  const view = mem.memoryView(t);
  expect(view).toHaveLength(t.size);
  view.set([7, 8, 9, 10]);
  return Array.from(t.dataSync());
}

describe('tfjs internals used by the step kernels', () => {
  it(`are pinned to tfjs ${TFJS_INTERNALS_CHECKED}: an upgrade fails here first (check ml/training/tfjs-internals.ts, then move the pin)`, () => {
    expect((tf as { version_core?: string }).version_core).toBe(TFJS_INTERNALS_CHECKED);
  });

  it("reach the loaded backend's memory or ops", () => {
    const backend = tf.getBackend();
    if (backend === 'tensorflow') {
      const be = nativeBackendInternals(tf);
      const B = be.binding;
      const y = be.executeSingleOutput('Relu', [{ name: 'T', type: B.TF_ATTR_TYPE!, value: B.TF_FLOAT }], [tf.tensor1d([-1, 2])]);
      expect(Array.from(y.dataSync())).toEqual([0, 2]);
      return;
    }
    expect(backend).toBe('wasm');
    const mem = jsBackendInternals(tf, 'wasm');
    const v = tf.variable(tf.zeros([2, 2]));
    expect(roundTrip(mem, v)).toEqual([7, 8, 9, 10]);
    const fresh = mem.freshTensor!([2, 2]);
    expect(fresh.shape).toEqual([2, 2]);
    expect(mem.memoryView(fresh)).toHaveLength(4);
    v.dispose();
    fresh.dispose();
  });

  it("reach the cpu backend's memory", async () => {
    const before = tf.getBackend();
    await tf.setBackend('cpu');
    try {
      const mem = jsBackendInternals(tf, 'cpu');
      expect(mem.freshTensor).toBeUndefined();
      expect(roundTrip(mem, tf.zeros([4]))).toEqual([7, 8, 9, 10]);
    } finally {
      await tf.setBackend(before);
    }
  });

  it('fail naming the tfjs version, the backend and the missing part', () => {
    const fake = (backend: object) => ({ version_core: '9.9.9', backend: () => backend }) as unknown as Tf;
    const wasm = () => jsBackendInternals(fake({ wasm: { HEAPF32: new Float32Array(1) } }), 'wasm');
    expect(wasm).toThrow(TfjsInternalsError);
    expect(wasm).toThrow(/TensorFlow\.js 9\.9\.9 \(wasm backend\) has no backend\.dataIdMap\.get\(\).*checked against 4\.22\.0/);
    expect(() => jsBackendInternals(fake({ data: {} }), 'cpu')).toThrow(/9\.9\.9 \(cpu backend\) has no backend\.data\.get\(\)/);
    const native = fake({ executeSingleOutput() {}, executeMultipleOutputs() {}, binding: { TF_ATTR_TYPE: 1, TF_ATTR_BOOL: 2, TF_FLOAT: 3 } });
    expect(() => nativeBackendInternals(native)).toThrow(/9\.9\.9 \(tensorflow backend\) has no backend\.binding\.TF_ATTR_STRING/);
  });
});
