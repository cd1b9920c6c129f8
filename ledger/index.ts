export * from './money.js';
export * from './schemas.js';
export * from './price-sheet.js';
export * from './pricing.js';
export * from './migrations.js';
export * from './repository.js';
export * from './meter.js';
export * from './outbox.js';
