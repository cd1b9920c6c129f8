import { S3Client } from '@aws-sdk/client-s3';
import { ArtifactStore } from '../artifacts.js';
import type { Logger } from '../logger.js';
import { S3ArtifactStore, type S3Location } from './s3-store.js';

/** Where artifacts go: a local folder, or a bucket (with a local cache folder). Parsed once from the environment (app/config.ts). */
export type ArtifactStoreSettings =
  | { kind: 'folder'; dir: string }
  | {
      kind: 's3';
      location: S3Location;
      cacheDir: string;
      /** A non-AWS endpoint (SeaweedFS, MinIO, …): path-style addressing, and the bucket is created when missing. */
      endpoint?: string;
      region: string;
      /** Static credentials; absent = the SDK's default chain (profile, SSO, instance role, …). */
      credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
      forcePathStyle: boolean;
      multipartThresholdBytes?: number;
      partSizeBytes?: number;
    };

/** Builds the configured store and checks it is usable (the bucket answers; created on a development endpoint). */
export async function createArtifactStore(s: ArtifactStoreSettings, logger?: Logger): Promise<ArtifactStore> {
  if (s.kind === 'folder') {
    const store = new ArtifactStore(s.dir);
    await store.open();
    return store;
  }
  const client = new S3Client({
    region: s.region,
    ...(s.endpoint ? { endpoint: s.endpoint } : {}),
    forcePathStyle: s.forcePathStyle,
    ...(s.credentials ? { credentials: s.credentials } : {}),
    maxAttempts: 5,
    // S3-compatible servers differ in the newer checksum headers; artifacts carry their own SHA-256.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const store = new S3ArtifactStore({
    location: s.location,
    client,
    cacheDir: s.cacheDir,
    createBucket: s.endpoint !== undefined,
    ...(s.multipartThresholdBytes ? { multipartThreshold: s.multipartThresholdBytes } : {}),
    ...(s.partSizeBytes ? { partSize: s.partSizeBytes } : {}),
    ...(logger ? { logger } : {}),
    endpointLabel: s.endpoint ?? 'AWS',
  });
  await store.open();
  return store;
}
