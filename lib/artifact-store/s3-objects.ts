import { createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

export interface ObjectsOptions {
  client: S3Client;
  bucket: string;
  /** Files at least this big go up in parts (default 16 MiB). */
  multipartThreshold?: number;
  /** Part size of a multipart upload (default 8 MiB; S3's minimum is 5 MiB). */
  partSize?: number;
  /** Parts (or files) in flight at once (default 4). */
  concurrency?: number;
  /** Tries per request on top of the SDK's own retries (default 3). */
  attempts?: number;
}

export interface ListedObject {
  key: string;
  size: number;
}

/**
 * The few object operations the S3 store needs, over the AWS SDK v3: put a file (one request, or
 * multipart above a threshold, each part retried), get one into a file (written aside, then
 * renamed), list a prefix, head, delete. A multipart upload that fails is aborted, so no part of
 * it stays billed or visible.
 */
export class Objects {
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly threshold: number;
  private readonly partSize: number;
  private readonly concurrency: number;
  private readonly attempts: number;

  constructor(o: ObjectsOptions) {
    this.client = o.client;
    this.bucket = o.bucket;
    this.threshold = o.multipartThreshold ?? 16 * 1024 * 1024;
    this.partSize = Math.max(5 * 1024 * 1024, o.partSize ?? 8 * 1024 * 1024);
    this.concurrency = Math.max(1, o.concurrency ?? 4);
    this.attempts = Math.max(1, o.attempts ?? 3);
  }

  get parallelism(): number {
    return this.concurrency;
  }

  async putBytes(key: string, body: Uint8Array | string, contentType?: string): Promise<void> {
    await this.retry(`put ${key}`, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ...(contentType ? { ContentType: contentType } : {}) })),
    );
  }

  /** Uploads a local file; multipart when it is at least the threshold. Returns the parts used (1 = single request). */
  async putFile(key: string, file: string): Promise<number> {
    const { size } = await stat(file);
    if (size < this.threshold) {
      const body = await readFile(file);
      await this.putBytes(key, body);
      return 1;
    }
    const { UploadId } = await this.retry(`start multipart ${key}`, () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key })),
    );
    if (!UploadId) throw new Error(`S3 gave no upload id for ${key}`);
    const count = Math.ceil(size / this.partSize);
    const etags: string[] = new Array<string>(count);
    const fh = await open(file, 'r');
    try {
      let next = 0;
      const work = async () => {
        for (;;) {
          const i = next++;
          if (i >= count) return;
          const start = i * this.partSize;
          const len = Math.min(this.partSize, size - start);
          const buf = Buffer.allocUnsafe(len);
          const { bytesRead } = await fh.read(buf, 0, len, start);
          if (bytesRead !== len) throw new Error(`${file} changed while it was uploaded`);
          const r = await this.retry(`part ${i + 1}/${count} of ${key}`, () =>
            this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId, PartNumber: i + 1, Body: buf, ContentLength: len })),
          );
          if (!r.ETag) throw new Error(`S3 gave no ETag for part ${i + 1} of ${key}`);
          etags[i] = r.ETag;
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.concurrency, count) }, work));
      await this.retry(`complete multipart ${key}`, () =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId,
            MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
          }),
        ),
      );
      return count;
    } catch (e) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId })).catch(() => undefined);
      throw e;
    } finally {
      await fh.close();
    }
  }

  /** The object's bytes, or undefined when there is none. */
  async getBytes(key: string): Promise<Buffer | undefined> {
    try {
      const r = await this.retry(`get ${key}`, () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key })));
      if (!r.Body) return Buffer.alloc(0);
      return Buffer.from(await r.Body.transformToByteArray());
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Downloads an object into `file` (written aside and renamed into place). */
  async getFile(key: string, file: string): Promise<void> {
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.part-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    try {
      await this.retry(`get ${key}`, async () => {
        const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
        if (!r.Body) throw new Error(`S3 returned no body for ${key}`);
        await pipeline(r.Body as Readable, createWriteStream(tmp));
      });
      await rename(tmp, file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: r.ContentLength ?? 0 };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async list(prefix: string): Promise<ListedObject[]> {
    const out: ListedObject[] = [];
    let token: string | undefined;
    do {
      const r = await this.retry(`list ${prefix}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) })),
      );
      for (const o of r.Contents ?? []) if (o.Key) out.push({ key: o.Key, size: o.Size ?? 0 });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async delete(key: string): Promise<void> {
    await this.retry(`delete ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
  }

  /** Runs `fn` up to `attempts` times on errors S3 calls transient (5xx, throttling, network). */
  private async retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let last: unknown;
    for (let i = 0; i < this.attempts; i++) {
      try {
        return await fn();
      } catch (e) {
        last = e;
        if (!isTransient(e) || i === this.attempts - 1) break;
        await new Promise((r) => setTimeout(r, 200 * 2 ** i));
      }
    }
    if (isNotFound(last)) throw last;
    const msg = last instanceof Error ? last.message : String(last);
    throw Object.assign(new Error(`S3 ${what}: ${msg}`), { name: (last as Error)?.name ?? 'S3Error', cause: last });
  }
}

export function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err?.name === 'NoSuchKey' || err?.name === 'NotFound' || err?.$metadata?.httpStatusCode === 404;
}

function isTransient(e: unknown): boolean {
  const err = e as { name?: string; code?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  const status = err?.$metadata?.httpStatusCode;
  if (status !== undefined) return status >= 500 || status === 429 || Boolean(err.$retryable);
  // No HTTP status: the request never got an answer (connection reset, refused, timed out).
  return true;
}
