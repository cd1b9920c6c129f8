import { defineConfig } from 'vitest/config';

/** `npm run record-histories`: records a new set of workflow histories on a real stack (not part of npm test). */
export default defineConfig({
  test: {
    include: ['test/workflows/record-histories.record.ts'],
    globalSetup: ['test/setup/temporal.ts'],
    testTimeout: 300_000,
    hookTimeout: 180_000,
    pool: 'forks',
  },
});
