export { ARTIFACT_UNSAFE_NAME, unsafeNameProblem } from './bucket-names.js';
export { FolderMirror } from './folder-mirror.js';
export { Objects } from './s3-objects.js';
export { S3ArtifactStore, parseS3Url, type S3Location, type S3StoreOptions } from './s3-store.js';
export { createArtifactStore, type ArtifactStoreSettings } from './create.js';
