import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/temporal.ts', 'test/setup/console.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // 2 cores: two test files at a time; training tests spawn their own processes.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
