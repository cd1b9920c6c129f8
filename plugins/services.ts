/**
 * Long-lived services the worker hands to every stage (database, model registry, …).
 * Each member is optional so a worker (or a test) only wires what its stages need;
 * a stage that needs a missing service fails with a clear error.
 */
export interface StageServices {
  [name: string]: unknown;
}

export function requireService<T>(services: StageServices, name: string): T {
  const s = services[name];
  if (s === undefined || s === null) {
    throw new Error(`stage needs the "${name}" service, which this worker was not started with`);
  }
  return s as T;
}
