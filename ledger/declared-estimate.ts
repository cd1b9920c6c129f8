// What a plugin may declare about its own cost. A leaf: the plugin contract (plugins/contract.ts)
// re-exports these types, and the SDK's type declarations must not pull the ledger in with them.

/** How a plugin's cost grows with its params (top-level numeric param names). */
export interface EstimateScale {
  /** Params the work grows in proportion to, e.g. epochs, replicas. */
  work?: readonly string[];
  /** Params the data (and so work, storage and outputs) grows in proportion to, e.g. a sample limit. */
  data?: readonly string[];
  /** Params that do not change what the stage costs (e.g. a revenue model): ignored when comparing. */
  ignore?: readonly string[];
}

/** What a plugin may declare for itself when there is no history. */
export interface DeclaredEstimate {
  durationSeconds: number;
  cpuSeconds: number;
  gpuSeconds?: number;
  /** Bytes the stage keeps (priced as storage). */
  bytesKept?: number;
  /** Bytes of its outputs (the next stages' input size). */
  outputBytes?: number;
}
