// The artifact reference: the only form in which data travels through Temporal. A leaf type.

/** A reference to an artifact in the artifact store. Only this travels through Temporal. */
export interface ArtifactRef {
  kind: string;
  /** `artifact:<relative path>` inside the artifact store. */
  uri: string;
  /** SHA-256 over the artifact's files (names and contents). */
  sha256: string;
  bytes: number;
  /** Small, JSON-friendly facts (shapes, counts, …). */
  meta?: Record<string, unknown>;
}
