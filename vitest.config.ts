import { existsSync } from 'node:fs';
import { configDefaults, defineConfig } from 'vitest/config';

// Two projects, one `npm test`:
//  - wasm:   every test, TensorFlow.js on the wasm backend (CAPSTAN_TF_BACKEND=wasm, inherited by
//            the training child processes);
//  - native: the ML and model tests again on the native backend (tfjs-node over TensorFlow's C
//            library, CAPSTAN_TF_BACKEND=node), when `npm run setup:native` has built it — or
//            always when CAPSTAN_EXPECT_NATIVE=1 (CI sets it), so a missing build fails instead
//            of quietly running nothing. The native project checks it really got 'tensorflow'.
const nativeBuilt = existsSync(new URL('./node_modules/@tensorflow/tfjs-node/lib/napi-v8/tfjs_binding.node', import.meta.url));
const expectNative = process.env.CAPSTAN_EXPECT_NATIVE === '1';
const runNative = nativeBuilt || expectNative;
// The config is evaluated once per project: say it once.
const said = globalThis as { capstanBackendsSaid?: boolean };
if (!said.capstanBackendsSaid) {
  said.capstanBackendsSaid = true;
  process.stdout.write(
    runNative
      ? `TensorFlow.js backends under test: wasm (all tests) + native 'tensorflow' (test/ml, test/models)${expectNative ? ', native required' : ''}\n`
      : "TensorFlow.js backends under test: wasm only — the native backend is not built here (npm run setup:native adds a 'native' project)\n",
  );
}

const PYTHON_TESTS = ['test/command/**/*.test.ts', 'test/sdk/**/*.test.ts', 'test/telemetry/python-*.test.ts'];

export default defineConfig({
  // `capstan/plugin` from the sources: a plugin under test that imports it through a checkout
  // linked as node_modules/capstan gets plugins/sdk.ts, not the compiled dist/sdk (package.json
  // `exports`, condition `capstan-source`; `npm pack` builds dist/sdk for everyone else).
  // Tests run in vite's server (ssr) environment; the rest are its default server conditions.
  ssr: { resolve: { conditions: ['capstan-source', 'node', 'development|production'] } },
  test: {
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // 2 cores: two test files at a time; training tests spawn their own processes.
    maxWorkers: 2,
    minWorkers: 1,
    projects: [
      {
        extends: true,
        test: {
          name: 'wasm',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...PYTHON_TESTS],
          globalSetup: [
            'test/setup/temporal.ts',
            'test/setup/console.ts',
            'test/setup/postgres.ts',
            'test/setup/chromium.ts',
            'test/setup/prometheus.ts',
            'test/setup/jaeger.ts',
            'test/setup/test-server.ts',
          ],
          env: { CAPSTAN_TF_BACKEND: 'wasm' },
        },
      },
      {
        // Stages in Python (the stage protocol, the SDK's own suite, Keras under MirroredStrategy):
        // CPU-heavy processes of their own, so they run after the other projects rather than beside
        // the tests that time runs (estimates, the console's waits). The Python comes from
        // `npm run setup:python` (test/setup/python.ts runs it) or CAPSTAN_PYTHON.
        extends: true,
        test: {
          name: 'python',
          include: PYTHON_TESTS,
          globalSetup: ['test/setup/temporal.ts', 'test/setup/python.ts', 'test/setup/jaeger.ts'],
          env: { CAPSTAN_TF_BACKEND: 'wasm' },
          sequence: { groupOrder: 1 },
        },
      },
      ...(runNative
        ? [
            {
              extends: true as const,
              test: {
                name: 'native',
                include: ['test/ml/**/*.test.ts', 'test/models/**/*.test.ts'],
                setupFiles: ['test/setup/native-backend.ts'],
                env: { CAPSTAN_TF_BACKEND: 'node' },
              },
            },
          ]
        : []),
    ],
  },
});
