// Serves the version the `production` alias points at, per model name. Checks the alias
// periodically (or on refresh()), loads a new version in the background and swaps atomically:
// a request holds the model it started with until it finishes, so none is dropped; the old
// model is disposed when its last request is done. At most `maxLoaded` models stay loaded: the
// least recently used is evicted (disposed once no request holds it) and reloaded on demand.
// Inputs are checked against the input spec the deploy stage recorded (shape and value range),
// and raw values are mapped through the recorded normalisation when a request says so.
// A version is served by the runtime of its format (TensorFlow.js or ONNX Runtime) behind one
// LoadedModel interface: the checks, the LRU, swaps and bookings do not depend on the format.
import type { ArtifactStore } from '../lib/artifacts.js';
import { silentLogger, type Logger } from '../lib/logger.js';
import { loadTf, type LoadedTf } from '../ml/backend.js';
import { argmax } from '../ml/evaluation/evaluate.js';
import { loadModelFolder } from '../ml/runtime/load-model.js';
import { sizeOf, type LoadedModel, type ModelFormat } from '../ml/runtime/loaded-model.js';
import type { OnnxRuntimeOptions } from '../ml/runtime/onnx-model.js';
import { PRODUCTION_ALIAS, RegistryError, type InputSpec, type ModelRegistry, type ModelVersion } from './registry.js';

export type ServingErrorCode = 'MODEL_NOT_FOUND' | 'NOT_DEPLOYED' | 'BAD_INPUT' | 'MODEL_UNAVAILABLE' | 'VERSION_NOT_FOUND' | 'BAD_ROLLBACK';

export class ServingError extends Error {
  constructor(
    readonly code: ServingErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ServingError';
  }
  /** HTTP status for the code. */
  get status(): number {
    return this.code === 'MODEL_NOT_FOUND' || this.code === 'NOT_DEPLOYED' || this.code === 'VERSION_NOT_FOUND'
      ? 404
      : this.code === 'MODEL_UNAVAILABLE'
        ? 503
        : 400;
  }
}

export interface ModelServerOptions {
  registry: ModelRegistry;
  artifacts: ArtifactStore;
  /** TensorFlow.js loader for tfjs layers versions (default: ml/backend loadTf); called on the first such version. */
  loadTf?: () => Promise<LoadedTf>;
  /** How ONNX Runtime runs ONNX versions (default: the CPU execution provider). */
  onnx?: OnnxRuntimeOptions;
  /** The alias served (default `production`). */
  alias?: string;
  /** Check the alias of every loaded model this often; 0 or unset = only on refresh(). */
  refreshIntervalMs?: number;
  /**
   * Called after every successful prediction request with the batch size, so the ledger can book
   * realised revenue per model version. The response waits for it: resolve once the batch is
   * durably recorded (the ledger outbox), so no acknowledged prediction goes unbooked. If it
   * throws, the request fails with MODEL_UNAVAILABLE (logged); close() waits for calls running.
   */
  onPredictions?: (model: string, version: number, count: number) => void | Promise<void>;
  /**
   * Called after every answered prediction request (the HTTP route and GraphQL's predict both
   * come here) with its batch size and how long it took, loading included: the API's metrics.
   */
  onPredicted?: (model: string, version: number, count: number, seconds: number) => void;
  /** Largest batch one request may send (default 1024). */
  maxBatch?: number;
  /** Most model versions kept loaded at once (default 8); the least recently used is evicted first. */
  maxLoaded?: number;
  logger?: Logger;
}

export interface ClassPrediction {
  label: number;
  /** The label's class name, when the version records class names (ONNX capstan-model.json). */
  className?: string;
  probabilities: number[];
}

export interface PredictResult {
  model: string;
  version: number;
  predictions: ClassPrediction[];
}

/** How request values map to model inputs: `normalized` (as the model takes them, the default) or `raw` (mapped through the recorded normalisation, e.g. 0–255 pixels × 1/255). */
export type InputEncoding = 'normalized' | 'raw';

export interface ServedModel {
  model: string;
  version: number;
  format: ModelFormat;
  /** What runs it, e.g. "onnxruntime-node 1.30.0 (cpu)" or "tfjs 4.22.0 (wasm)". */
  runtime: string;
  sampleShape: number[];
  inFlight: number;
  loadedAt: string;
}

export interface ModelServer {
  /** Predicts with the served version of `model`; loads it on first use. */
  predict(model: string, inputs: unknown, opts?: { encoding?: InputEncoding }): Promise<PredictResult>;
  /** Re-reads the alias of `model` (or of every loaded model) and swaps to a new version if it moved. */
  refresh(model?: string): Promise<void>;
  /** Points the alias at `version` and serves it before returning. */
  promote(model: string, version: number): Promise<ModelVersion>;
  /** Points the alias back at an earlier version and serves it before returning. One call. */
  rollback(model: string, toVersion: number): Promise<{ from: number; to: number }>;
  /** What is being served now. */
  served(): ServedModel[];
  /** Predictions answered per model and version since start. */
  predictionCounts(): Record<string, Record<number, number>>;
  close(): Promise<void>;
}

interface Entry {
  model: string;
  version: number;
  net: LoadedModel;
  sampleShape: number[];
  sampleSize: number;
  /** Absent for versions registered before input specs were recorded. */
  inputSpec?: InputSpec;
  inFlight: number;
  retired: boolean;
  loadedAt: string;
}

export function createModelServer(opts: ModelServerOptions): ModelServer {
  const alias = opts.alias ?? PRODUCTION_ALIAS;
  const logger = opts.logger ?? silentLogger;
  const maxBatch = opts.maxBatch ?? 1024;
  const maxLoaded = Math.max(1, opts.maxLoaded ?? 8);
  const getTf = opts.loadTf ?? (() => loadTf());
  const current = new Map<string, Entry>();
  /** One refresh/load at a time per model (loads for different models run independently). */
  const chains = new Map<string, Promise<unknown>>();
  const counts = new Map<string, Map<number, number>>();
  let closed = false;
  const pending = new Set<Promise<unknown>>();

  const serial = <T>(model: string, fn: () => Promise<T>): Promise<T> => {
    const prev = chains.get(model) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    chains.set(
      model,
      next.catch(() => undefined),
    );
    return next;
  };

  async function load(v: ModelVersion): Promise<Entry> {
    const ok = await opts.artifacts.verify({ kind: 'model', uri: v.artifactUri, sha256: v.sha256, bytes: v.bytes });
    if (!ok.ok) throw new ServingError('MODEL_UNAVAILABLE', `model ${v.model} version ${v.version}: ${ok.reason}`);
    // From an S3 store the version is fetched into the local cache (and hash-checked) first.
    const dir = await opts.artifacts.localPath({ kind: 'model', uri: v.artifactUri, sha256: v.sha256, bytes: v.bytes });
    let net: LoadedModel;
    try {
      // Loads and warms up, so the first request does not pay for kernel set-up.
      net = await loadModelFolder(dir, v.format, { tf: getTf, ...(opts.onnx ? { onnx: opts.onnx } : {}) });
    } catch (e) {
      throw new ServingError('MODEL_UNAVAILABLE', `model ${v.model} version ${v.version} (${v.format}) cannot be loaded: ${(e as Error).message}`);
    }
    const sampleShape = net.sampleShape;
    return {
      model: v.model,
      version: v.version,
      net,
      sampleShape,
      sampleSize: sizeOf(sampleShape),
      ...(v.inputSpec ? { inputSpec: v.inputSpec } : {}),
      inFlight: 0,
      retired: false,
      loadedAt: new Date().toISOString(),
    };
  }

  /** Marks `model` most recently used (Map order is the LRU order). */
  function touch(model: string, e: Entry): void {
    if (current.get(model) !== e) return;
    current.delete(model);
    current.set(model, e);
  }

  /** Evicts the least recently used models beyond maxLoaded; each is disposed once no request holds it. */
  function evict(keep: string): void {
    for (const [m, e] of current) {
      if (current.size <= maxLoaded) break;
      if (m === keep) continue;
      current.delete(m);
      retire(e);
      logger.info('model evicted from the cache', { model: m, version: e.version, maxLoaded, inFlight: e.inFlight });
    }
  }

  function retire(e: Entry): void {
    e.retired = true;
    if (e.inFlight === 0) dispose(e);
  }

  function dispose(e: Entry): void {
    void e.net.dispose().catch((err: unknown) => logger.warn('disposing a model failed', { model: e.model, version: e.version, error: String(err) }));
  }

  /** Loads what the alias points at, if it differs from what is served, and swaps. */
  async function sync(model: string): Promise<Entry | undefined> {
    let target: ModelVersion | undefined;
    try {
      target = await opts.registry.resolveAlias(model, alias);
    } catch (e) {
      throw new ServingError('MODEL_UNAVAILABLE', `registry unavailable: ${(e as Error).message}`);
    }
    const served = current.get(model);
    if (!target) {
      if (served) {
        logger.warn('alias no longer set; keeping the served version', { model, alias, version: served.version });
        return served;
      }
      if (await opts.registry.hasModel(model)) throw new ServingError('NOT_DEPLOYED', `model ${model} has no ${alias} version`);
      throw new ServingError('MODEL_NOT_FOUND', `unknown model ${model}`);
    }
    if (served && served.version === target.version) return served;
    const entry = await load(target);
    if (closed) {
      dispose(entry);
      throw new ServingError('MODEL_UNAVAILABLE', 'model server is closed');
    }
    current.delete(model);
    current.set(model, entry);
    if (served) retire(served);
    evict(model);
    logger.info('serving model version', { model, version: entry.version, previous: served?.version });
    return entry;
  }

  async function entryFor(model: string): Promise<Entry> {
    const e = current.get(model);
    if (e) return e;
    const loaded = await serial(model, () => sync(model));
    if (!loaded) throw new ServingError('MODEL_NOT_FOUND', `unknown model ${model}`);
    return loaded;
  }

  async function refresh(model?: string): Promise<void> {
    const names = model ? [model] : [...current.keys()];
    const results = await Promise.allSettled(names.map((m) => serial(m, () => sync(m))));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (model && failed) throw failed.reason;
    for (const r of results) if (r.status === 'rejected') logger.warn('model refresh failed', { error: String(r.reason) });
  }

  const timer = opts.refreshIntervalMs
    ? setInterval(() => void refresh().catch((e) => logger.warn('model refresh failed', { error: String(e) })), opts.refreshIntervalMs)
    : undefined;
  timer?.unref();

  return {
    async predict(model, inputs, o = {}) {
      const t0 = performance.now();
      if (closed) throw new ServingError('MODEL_UNAVAILABLE', 'model server is closed');
      let entry = await entryFor(model);
      // A swap or an eviction may have retired it while we waited: take the one served now. No
      // await from here to inFlight++, so the model cannot be disposed under this request.
      while (entry.retired) entry = current.get(model) ?? (await entryFor(model));
      const batch = toBatch(inputs, entry, maxBatch, o.encoding ?? 'normalized');
      touch(model, entry);
      entry.inFlight++;
      let probs: Float32Array;
      let classes: number;
      try {
        ({ probabilities: probs, classes } = await entry.net.predict(batch.values, batch.n));
      } finally {
        entry.inFlight--;
        if (entry.retired && entry.inFlight === 0) dispose(entry);
      }
      const predictions: ClassPrediction[] = [];
      for (let i = 0; i < batch.n; i++) {
        const label = argmax(probs, i * classes, classes);
        const className = entry.net.labels?.[label];
        predictions.push({
          label,
          ...(className !== undefined ? { className } : {}),
          probabilities: Array.from(probs.subarray(i * classes, (i + 1) * classes)),
        });
      }
      const perVersion = counts.get(model) ?? new Map<number, number>();
      perVersion.set(entry.version, (perVersion.get(entry.version) ?? 0) + batch.n);
      counts.set(model, perVersion);
      if (opts.onPredictions) {
        // On the response path: the answer waits for the hook (the ledger outbox's durable
        // write), so every acknowledged prediction is recorded. If it cannot be recorded, the
        // request fails (503) and the client may retry. close() waits for writes still running.
        const version = entry.version;
        const booking = Promise.resolve().then(() => opts.onPredictions!(model, version, batch.n));
        pending.add(booking);
        try {
          await booking;
        } catch (e) {
          logger.error('onPredictions hook failed', { model, version, count: batch.n, error: String(e) });
          throw new ServingError('MODEL_UNAVAILABLE', 'the prediction could not be recorded; try again');
        } finally {
          pending.delete(booking);
        }
      }
      opts.onPredicted?.(model, entry.version, batch.n, (performance.now() - t0) / 1000);
      return { model, version: entry.version, predictions };
    },
    refresh,
    async promote(model, version) {
      try {
        await opts.registry.setAlias(model, alias, version, 'promote');
      } catch (e) {
        throw fromRegistry(e);
      }
      await refresh(model);
      return (await opts.registry.getVersion(model, version))!;
    },
    async rollback(model, toVersion) {
      let r: { from: number; to: number };
      try {
        r = await opts.registry.rollback(model, toVersion, alias);
      } catch (e) {
        throw fromRegistry(e);
      }
      await refresh(model);
      return r;
    },
    served() {
      return [...current.values()].map((e) => ({
        model: e.model,
        version: e.version,
        format: e.net.format,
        runtime: e.net.runtime,
        sampleShape: e.sampleShape,
        inFlight: e.inFlight,
        loadedAt: e.loadedAt,
      }));
    },
    predictionCounts() {
      const out: Record<string, Record<number, number>> = {};
      for (const [m, per] of counts) out[m] = Object.fromEntries(per);
      return out;
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await Promise.allSettled([...chains.values(), ...pending]);
      for (const e of current.values()) retire(e);
      current.clear();
    },
  };
}

function fromRegistry(e: unknown): unknown {
  if (e instanceof RegistryError) {
    const code: ServingErrorCode =
      e.code === 'MODEL_NOT_FOUND'
        ? 'MODEL_NOT_FOUND'
        : e.code === 'VERSION_NOT_FOUND'
          ? 'VERSION_NOT_FOUND'
          : e.code === 'ALIAS_NOT_SET'
            ? 'NOT_DEPLOYED'
            : 'BAD_ROLLBACK';
    return new ServingError(code, e.message);
  }
  return e;
}

/**
 * Checks and flattens `inputs`: a list of samples, each either flat (prod(shape) numbers) or
 * nested exactly as the model's sample shape (e.g. 28 rows of 28). Errors name the sample.
 */
export function toBatch(
  inputs: unknown,
  entry: { model: string; version: number; sampleShape: number[]; sampleSize: number; inputSpec?: InputSpec },
  maxBatch: number,
  encoding: InputEncoding = 'normalized',
): { n: number; values: Float32Array } {
  const want = `[${entry.sampleShape.join(', ')}]`;
  const who = `model ${entry.model} v${entry.version}`;
  if (!Array.isArray(inputs))
    throw new ServingError('BAD_INPUT', `"inputs" must be a list of samples (${who} expects samples of shape ${want} or ${entry.sampleSize} flat numbers)`);
  if (inputs.length === 0) throw new ServingError('BAD_INPUT', '"inputs" is empty: send at least one sample');
  if (inputs.length > maxBatch) throw new ServingError('BAD_INPUT', `"inputs" has ${inputs.length} samples; at most ${maxBatch} per request`);
  const values = new Float32Array(inputs.length * entry.sampleSize);
  inputs.forEach((sample, i) => {
    const flat: number[] = [];
    const shape = shapeOf(sample, `inputs[${i}]`, flat);
    const flatOk = shape.length === 1 && shape[0] === entry.sampleSize;
    const nestedOk = shape.length > 1 && sameShape(shape, entry.sampleShape);
    if (!flatOk && !nestedOk) {
      throw new ServingError('BAD_INPUT', `inputs[${i}] has shape [${shape.join(', ')}]; ${who} expects ${want} (or ${entry.sampleSize} flat numbers)`);
    }
    values.set(flat, i * entry.sampleSize);
  });
  checkValues(values, entry, encoding);
  return { n: inputs.length, values };
}

/**
 * Checks every value against the version's input spec, mapping raw values first when asked.
 * Versions registered without a spec are served as before: no range check, no raw encoding.
 */
function checkValues(
  values: Float32Array,
  entry: { model: string; version: number; sampleSize: number; inputSpec?: InputSpec },
  encoding: InputEncoding,
): void {
  const spec = entry.inputSpec;
  const who = `model ${entry.model} v${entry.version}`;
  const at = (i: number) => `inputs[${Math.floor(i / entry.sampleSize)}] at flat index ${i % entry.sampleSize}`;
  if (encoding === 'raw') {
    const raw = spec?.raw;
    if (!raw)
      throw new ServingError(
        'BAD_INPUT',
        `${who} records no raw encoding (it was registered without an input spec, or its data needs none): send inputs as the model takes them, without "encoding": "raw"`,
      );
    if (raw.kind === 'scale') {
      const [lo, hi] = raw.rawRange;
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        if (v < lo || v > hi)
          throw new ServingError(
            'BAD_INPUT',
            `${at(i)} is ${fmt(v)}, but with "encoding": "raw" values must be in [${fmt(lo)}, ${fmt(hi)}] (${raw.describe}) for ${who}`,
          );
        values[i] = v * raw.scale;
      }
      return;
    }
    if (raw.mean.length !== entry.sampleSize || raw.std.length !== entry.sampleSize) {
      throw new ServingError(
        'BAD_INPUT',
        `${who}'s recorded normalisation has ${raw.mean.length} features, the model takes ${entry.sampleSize}: send inputs as the model takes them`,
      );
    }
    for (let i = 0; i < values.length; i++) {
      const f = i % entry.sampleSize;
      values[i] = (values[i]! - raw.mean[f]!) / raw.std[f]!;
    }
    const [lo, hi] = spec.range;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v < lo || v > hi) {
        throw new ServingError(
          'BAD_INPUT',
          `${at(i)} normalises to ${fmt(v)}, but values must be in [${fmt(lo)}, ${fmt(hi)}] (${spec.describe}) for ${who}: the sample is far outside the data the model was trained on`,
        );
      }
    }
    return;
  }
  if (!spec) return;
  const [lo, hi] = spec.range;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < lo || v > hi) {
      const hint = spec.raw ? `; send ${spec.raw.describe} with "encoding": "raw"` : '';
      throw new ServingError('BAD_INPUT', `${at(i)} is ${fmt(v)}, but values must be in [${fmt(lo)}, ${fmt(hi)}] (${spec.describe}) for ${who}${hint}`);
    }
  }
}

function fmt(n: number): string {
  return String(Number(n.toPrecision(4)));
}

function sameShape(a: number[], model: number[]): boolean {
  // A trailing channel of 1 may be left out: [28, 28] fits a model of [28, 28, 1].
  const m = model.length === a.length + 1 && model[model.length - 1] === 1 ? model.slice(0, -1) : model;
  return a.length === m.length && a.every((d, i) => d === m[i]);
}

function shapeOf(x: unknown, where: string, flat: number[]): number[] {
  if (typeof x === 'number') {
    if (!Number.isFinite(x)) throw new ServingError('BAD_INPUT', `${where} is not a finite number`);
    flat.push(x);
    return [];
  }
  if (!Array.isArray(x)) throw new ServingError('BAD_INPUT', `${where} must be a number or a list, got ${x === null ? 'null' : typeof x}`);
  if (x.length === 0) throw new ServingError('BAD_INPUT', `${where} is an empty list`);
  let inner: number[] | undefined;
  x.forEach((el, j) => {
    const s = shapeOf(el, `${where}[${j}]`, flat);
    if (inner === undefined) inner = s;
    else if (!sameDims(inner, s))
      throw new ServingError('BAD_INPUT', `${where} is ragged: ${where}[${j}] has shape [${s.join(', ')}], ${where}[0] has [${inner.join(', ')}]`);
  });
  return [x.length, ...(inner ?? [])];
}

function sameDims(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
