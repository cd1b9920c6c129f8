export type { Db, Migration } from './types.js';
export { openDb, isPostgresUrl, type OpenDbOptions } from './open.js';
export { openSqlite } from './sqlite.js';
export { openPostgres } from './postgres.js';
export { migrate } from './migrate.js';
