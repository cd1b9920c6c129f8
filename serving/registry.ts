// The model registry: versions of each named model (auto-incremented per name), aliases
// (e.g. `production`) pointing at one version, the principal (API token) that owns each name,
// each name's promotion policy, and the input spec each version was trained for. One query layer
// for SQLite and PostgreSQL.
import type { Db, Migration } from '../lib/db/types.js';
import { MODEL_FORMATS, type ModelFormat } from '../ml/runtime/loaded-model.js';

export const PRODUCTION_ALIAS = 'production';

/**
 * The largest tolerance a spec's noWorseThan may use while champion/challenger is required, unless
 * an admin sets another for the model: the largest the shipped pipelines use (2 points of
 * accuracy), so retraining noise passes and `tolerance: 1` does not switch the check off.
 */
export const DEFAULT_MAX_TOLERANCE = 0.02;

export const registryMigrations: Migration[] = [
  {
    id: 'registry/0001-init',
    sql: `
CREATE TABLE IF NOT EXISTS model_versions (
  model TEXT NOT NULL,
  version INTEGER NOT NULL,
  run_id TEXT NOT NULL,
  stage_id TEXT NOT NULL,
  artifact_uri TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  metrics TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (model, version),
  UNIQUE (model, run_id, stage_id)
);
CREATE TABLE IF NOT EXISTS model_aliases (
  model TEXT NOT NULL,
  alias TEXT NOT NULL,
  version INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS model_alias_events (
  model TEXT NOT NULL,
  alias TEXT NOT NULL,
  seq INTEGER NOT NULL,
  version INTEGER NOT NULL,
  previous_version INTEGER,
  reason TEXT NOT NULL,
  at TEXT NOT NULL,
  PRIMARY KEY (model, alias, seq)
);
`,
  },
  {
    // Owner of each model name: the pipeline that registered it first. Existing names are claimed
    // by the pipeline of their first version (recorded in its metrics by core:deploy); a name
    // whose first version does not say is claimed by its next deploy.
    id: 'registry/0002-owners-input-spec',
    sql: {
      sqlite: `
CREATE TABLE IF NOT EXISTS model_owners (
  model TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  run_id TEXT NOT NULL,
  claimed_at TEXT NOT NULL
);
ALTER TABLE model_versions ADD COLUMN input_spec TEXT;
INSERT INTO model_owners (model, pipeline, run_id, claimed_at)
  SELECT v.model, json_extract(v.metrics, '$.pipeline'), v.run_id, v.created_at FROM model_versions v
  WHERE v.version = (SELECT MIN(w.version) FROM model_versions w WHERE w.model = v.model)
    AND json_valid(v.metrics) AND json_type(v.metrics, '$.pipeline') = 'text'
  ON CONFLICT (model) DO NOTHING;
`,
      postgres: `
CREATE TABLE IF NOT EXISTS model_owners (
  model TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  run_id TEXT NOT NULL,
  claimed_at TEXT NOT NULL
);
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS input_spec TEXT;
INSERT INTO model_owners (model, pipeline, run_id, claimed_at)
  SELECT v.model, v.metrics::json->>'pipeline', v.run_id, v.created_at FROM model_versions v
  WHERE v.version = (SELECT MIN(w.version) FROM model_versions w WHERE w.model = v.model)
    AND json_typeof(v.metrics::json->'pipeline') = 'string'
  ON CONFLICT (model) DO NOTHING;
`,
    },
  },
  {
    // The format each version is stored in; every version before this was a tfjs layers folder.
    id: 'registry/0003-model-format',
    sql: {
      sqlite: `ALTER TABLE model_versions ADD COLUMN format TEXT NOT NULL DEFAULT 'tfjs-layers';`,
      postgres: `ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS format TEXT NOT NULL DEFAULT 'tfjs-layers';`,
    },
  },
  {
    // Owners become principals: the token (public id + name) that first registered the name, or
    // the one an admin granted it to. Rows from before keep their pipeline but get no token: a
    // pipeline name is something any operator may write in a spec, so such a name is owned by
    // admins only until an admin grants it (setModelOwner). Policies: an admin's per-model
    // opt-out from champion/challenger on deploy-stage promotions, with who set it.
    id: 'registry/0004-principal-owners-policies',
    sql: {
      sqlite: `
ALTER TABLE model_owners ADD COLUMN token_id TEXT;
ALTER TABLE model_owners ADD COLUMN token_name TEXT;
ALTER TABLE model_owners ADD COLUMN granted_by TEXT;
CREATE TABLE IF NOT EXISTS model_policies (
  model TEXT PRIMARY KEY,
  require_champion_challenger INTEGER NOT NULL,
  max_tolerance REAL NOT NULL,
  set_by TEXT NOT NULL,
  set_at TEXT NOT NULL
);
`,
      postgres: `
ALTER TABLE model_owners ADD COLUMN IF NOT EXISTS token_id TEXT;
ALTER TABLE model_owners ADD COLUMN IF NOT EXISTS token_name TEXT;
ALTER TABLE model_owners ADD COLUMN IF NOT EXISTS granted_by TEXT;
CREATE TABLE IF NOT EXISTS model_policies (
  model TEXT PRIMARY KEY,
  require_champion_challenger INTEGER NOT NULL,
  max_tolerance DOUBLE PRECISION NOT NULL,
  set_by TEXT NOT NULL,
  set_at TEXT NOT NULL
);
`,
    },
  },
];

/**
 * What a model version was trained on, recorded by core:deploy from data prep's normalisation:
 * the model server refuses inputs outside `range`, and maps raw values when a request says so.
 */
export interface InputSpec {
  /** One sample's shape, e.g. [28, 28]. */
  shape: number[];
  dtype: 'float32';
  /** Accepted model-input values, inclusive (after normalisation). */
  range: [number, number];
  /** What the values are, for error messages, e.g. "normalised pixels". */
  describe: string;
  /** How raw values become model inputs; absent when the model records none. */
  raw?: RawEncoding;
}

export type RawEncoding =
  /** input = raw × scale; raw values must lie in rawRange (e.g. pixels 0–255, scale 1/255). */
  | { kind: 'scale'; scale: number; rawRange: [number, number]; describe: string }
  /** input = (raw − mean[i]) / std[i] per feature i (flattened sample order). */
  | { kind: 'zscore'; mean: number[]; std: number[]; describe: string };

/**
 * Who owns a model name: the API token that registered it first (or that an admin granted it to).
 * Only the owner and admins may register versions of it or move its aliases.
 */
export interface ModelOwner {
  model: string;
  /** The owning token's public id; null: owned by admins only (names claimed before owners were principals, or by a run with no token id). */
  tokenId: string | null;
  /** The owning token's name when it was claimed or granted (for messages; the id is what counts). */
  name: string | null;
  /** The pipeline whose run claimed it ('' for a grant); informational. */
  pipeline: string;
  /** The run that claimed it ('' for a grant). */
  runId: string;
  claimedAt: string;
  /** The admin who granted it, when it was granted rather than claimed. */
  grantedBy: string | null;
}

/** Who claims a name or asks to write to it: a token (id + name), and whether it is an admin's. */
export interface Claimant {
  tokenId?: string;
  name?: string;
  admin?: boolean;
}

/**
 * How deploy stages may move `production` of a model. By default every such promotion must pass
 * champion/challenger (noWorseThan: production, on the candidate's test set) with at most
 * `maxTolerance`; only an admin changes this, and who did is recorded.
 */
export interface PromotionPolicy {
  model: string;
  requireChampionChallenger: boolean;
  /** The largest tolerance a spec's noWorseThan may use while champion/challenger is required (0..1). */
  maxTolerance: number;
  /** Who set it (an admin's token name); null for the default. */
  setBy: string | null;
  setAt: string | null;
}

export type ModelMetrics = Record<string, number | string | boolean>;

export interface ModelVersion {
  model: string;
  version: number;
  runId: string;
  stageId: string;
  /** `artifact:<path>` of the exported model folder in the artifact store. */
  artifactUri: string;
  /** How that folder is stored: `tfjs-layers` (model.json + weights) or `onnx` (model.onnx + capstan-model.json). */
  format: ModelFormat;
  sha256: string;
  bytes: number;
  metrics: ModelMetrics;
  createdAt: string;
  /** Absent for versions registered before input specs were recorded: served without a range check. */
  inputSpec?: InputSpec;
}

export interface ModelAlias {
  model: string;
  alias: string;
  version: number;
  updatedAt: string;
}

export interface AliasEvent {
  model: string;
  alias: string;
  version: number;
  previousVersion: number | null;
  reason: string;
  at: string;
}

/**
 * A new version: everything but the number and time, which the registry assigns (the format
 * defaults to tfjs-layers). With `owner`, a name nobody has registered yet is claimed for that
 * token (from `pipeline`'s run), and a name owned by another principal — or by admins only — is
 * refused (MODEL_NAME_TAKEN) unless `admin`.
 */
export type RegisterVersionInput = Omit<ModelVersion, 'version' | 'createdAt' | 'format'> & { format?: ModelFormat; owner?: Claimant & { pipeline: string } };

export type RegistryErrorCode =
  | 'MODEL_NOT_FOUND'
  | 'VERSION_NOT_FOUND'
  | 'ALIAS_NOT_SET'
  | 'BAD_ROLLBACK'
  | 'BAD_MODEL_NAME'
  | 'MODEL_NAME_TAKEN'
  | 'BAD_ARGUMENT'
  | 'ALIAS_MOVED';

/** An expected registry error with a stable code (the API maps it to 404/400). */
export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** Model names: used in URLs and artifact paths. */
export const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

interface VersionRow {
  model: string;
  version: number | string;
  run_id: string;
  stage_id: string;
  artifact_uri: string;
  sha256: string;
  bytes: number | string;
  metrics: string;
  created_at: string;
  input_spec: string | null;
  format: string;
}

const VERSION_COLS = 'model, version, run_id, stage_id, artifact_uri, sha256, bytes, metrics, created_at, input_spec, format';

export class ModelRegistry {
  private readonly now: () => Date;

  constructor(
    private readonly db: Db,
    opts: { now?: () => Date } = {},
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  /**
   * Registers a version; idempotent per (model, run, stage): registering again returns the
   * version created the first time (`created: false`), whatever the new input says.
   */
  async register(input: RegisterVersionInput): Promise<{ version: ModelVersion; created: boolean }> {
    checkName(input.model);
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        return await this.db.tx(async (tx) => {
          // Serialise writers of one model (SQLite's BEGIN IMMEDIATE already does).
          if (tx.dialect === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(hashtext(?))', [`capstan.registry:${input.model}`]);
          const existing = await tx.query<VersionRow>(`SELECT ${VERSION_COLS} FROM model_versions WHERE model = ? AND run_id = ? AND stage_id = ?`, [
            input.model,
            input.runId,
            input.stageId,
          ]);
          if (existing[0]) return { version: toVersion(existing[0]), created: false };
          const createdAt = this.now().toISOString();
          if (input.owner) {
            const owner = await ownerIn(tx, input.model);
            if (!owner && !(await hasVersions(tx, input.model))) {
              await tx.run('INSERT INTO model_owners (model, pipeline, run_id, claimed_at, token_id, token_name) VALUES (?, ?, ?, ?, ?, ?)', [
                input.model,
                input.owner.pipeline,
                input.runId,
                createdAt,
                input.owner.tokenId ?? null,
                input.owner.tokenId ? (input.owner.name ?? null) : null,
              ]);
            } else if (!mayWrite(owner, input.owner)) {
              throw new RegistryError('MODEL_NAME_TAKEN', nameTakenMessage(input.model, owner));
            }
          }
          const next = await tx.query<{ v: number | string | null }>('SELECT MAX(version) AS v FROM model_versions WHERE model = ?', [input.model]);
          const version = Number(next[0]?.v ?? 0) + 1;
          await tx.run(`INSERT INTO model_versions (${VERSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
            input.model,
            version,
            input.runId,
            input.stageId,
            input.artifactUri,
            input.sha256,
            input.bytes,
            JSON.stringify(input.metrics),
            createdAt,
            input.inputSpec ? JSON.stringify(input.inputSpec) : null,
            input.format ?? 'tfjs-layers',
          ]);
          const { owner: _owner, ...stored } = input;
          return { version: { ...stored, format: input.format ?? 'tfjs-layers', version, createdAt }, created: true };
        });
      } catch (e) {
        if (e instanceof RegistryError) throw e;
        // A writer that did not take the lock (another tool) may have raced us: try again.
        lastErr = e;
        await new Promise((r) => setTimeout(r, 10 * (attempt + 1)));
      }
    }
    throw lastErr;
  }

  /** Who owns `model`, or undefined when nobody has claimed it (a new name, or one registered before owners were recorded). */
  async owner(model: string): Promise<ModelOwner | undefined> {
    return ownerIn(this.db, model);
  }

  /**
   * Gives `model` to a token (an admin's grant or transfer): from then on that token, and admins,
   * may register versions and move its aliases. The name need not be registered yet (a reservation).
   */
  async setOwner(model: string, to: { tokenId: string; name: string }, grantedBy: string): Promise<ModelOwner> {
    checkName(model);
    const at = this.now().toISOString();
    await this.db.run(
      `INSERT INTO model_owners (model, pipeline, run_id, claimed_at, token_id, token_name, granted_by) VALUES (?, '', '', ?, ?, ?, ?)
       ON CONFLICT (model) DO UPDATE SET token_id = excluded.token_id, token_name = excluded.token_name, granted_by = excluded.granted_by, claimed_at = excluded.claimed_at`,
      [model, at, to.tokenId, to.name, grantedBy],
    );
    return (await ownerIn(this.db, model))!;
  }

  /** Whether this principal may register versions of `model` and move its aliases (the owner, or an admin). */
  async mayWrite(model: string, who: Claimant): Promise<boolean> {
    const owner = await ownerIn(this.db, model);
    if (!owner && !(await this.hasModel(model))) return true;
    return mayWrite(owner, who);
  }

  /** How deploy stages may move `production` of `model` (the default when no admin has set one). */
  async promotionPolicy(model: string): Promise<PromotionPolicy> {
    const rows = await this.db.query<{
      require_champion_challenger: number | string | boolean;
      max_tolerance: number | string;
      set_by: string;
      set_at: string;
    }>('SELECT require_champion_challenger, max_tolerance, set_by, set_at FROM model_policies WHERE model = ?', [model]);
    const r = rows[0];
    if (!r) return { model, requireChampionChallenger: true, maxTolerance: DEFAULT_MAX_TOLERANCE, setBy: null, setAt: null };
    return {
      model,
      requireChampionChallenger: Number(r.require_champion_challenger) !== 0,
      maxTolerance: Number(r.max_tolerance),
      setBy: r.set_by,
      setAt: r.set_at,
    };
  }

  /** An admin's setting for `model`: whether deploy-stage promotions need champion/challenger, and the largest tolerance a spec may use. */
  async setPromotionPolicy(model: string, p: { requireChampionChallenger: boolean; maxTolerance?: number }, setBy: string): Promise<PromotionPolicy> {
    checkName(model);
    const maxTolerance = p.maxTolerance ?? DEFAULT_MAX_TOLERANCE;
    if (!(maxTolerance >= 0 && maxTolerance <= 1))
      throw new RegistryError('BAD_ARGUMENT', `maxTolerance is a fraction of accuracy in 0..1 (0.005 = half a percentage point); got ${maxTolerance}`);
    await this.db.run(
      `INSERT INTO model_policies (model, require_champion_challenger, max_tolerance, set_by, set_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (model) DO UPDATE SET require_champion_challenger = excluded.require_champion_challenger, max_tolerance = excluded.max_tolerance, set_by = excluded.set_by, set_at = excluded.set_at`,
      [model, p.requireChampionChallenger ? 1 : 0, maxTolerance, setBy, this.now().toISOString()],
    );
    return this.promotionPolicy(model);
  }

  async getVersion(model: string, version: number): Promise<ModelVersion | undefined> {
    const rows = await this.db.query<VersionRow>(`SELECT ${VERSION_COLS} FROM model_versions WHERE model = ? AND version = ?`, [model, version]);
    return rows[0] ? toVersion(rows[0]) : undefined;
  }

  /** Newest first. */
  async listVersions(model: string): Promise<ModelVersion[]> {
    const rows = await this.db.query<VersionRow>(`SELECT ${VERSION_COLS} FROM model_versions WHERE model = ? ORDER BY version DESC`, [model]);
    return rows.map(toVersion);
  }

  async listModels(): Promise<string[]> {
    const rows = await this.db.query<{ model: string }>('SELECT DISTINCT model FROM model_versions ORDER BY model');
    return rows.map((r) => r.model);
  }

  async hasModel(model: string): Promise<boolean> {
    const rows = await this.db.query('SELECT 1 AS one FROM model_versions WHERE model = ? LIMIT 1', [model]);
    return rows.length > 0;
  }

  async aliases(model: string): Promise<ModelAlias[]> {
    const rows = await this.db.query<{ model: string; alias: string; version: number | string; updated_at: string }>(
      'SELECT model, alias, version, updated_at FROM model_aliases WHERE model = ? ORDER BY alias',
      [model],
    );
    return rows.map((r) => ({ model: r.model, alias: r.alias, version: Number(r.version), updatedAt: r.updated_at }));
  }

  /** The version an alias points at, or undefined when the alias is not set. */
  async resolveAlias(model: string, alias = PRODUCTION_ALIAS): Promise<ModelVersion | undefined> {
    const rows = await this.db.query<VersionRow>(
      `SELECT ${VERSION_COLS.split(', ')
        .map((c) => `v.${c}`)
        .join(', ')} FROM model_aliases a JOIN model_versions v ON v.model = a.model AND v.version = a.version WHERE a.model = ? AND a.alias = ?`,
      [model, alias],
    );
    return rows[0] ? toVersion(rows[0]) : undefined;
  }

  /**
   * Points `alias` at `version` (which must exist) and records the change. With `expectPrevious`
   * (a version, or null for "not set"), refuses with ALIAS_MOVED when the alias points elsewhere
   * by now: a deploy that compared against one production version does not replace another.
   */
  async setAlias(
    model: string,
    alias: string,
    version: number,
    reason = 'set',
    o: { expectPrevious?: number | null } = {},
  ): Promise<{ alias: ModelAlias; previousVersion: number | null }> {
    return this.db.tx(async (tx) => {
      if (tx.dialect === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(hashtext(?))', [`capstan.registry:${model}`]);
      const v = await tx.query('SELECT 1 AS one FROM model_versions WHERE model = ? AND version = ?', [model, version]);
      if (v.length === 0) {
        const any = await tx.query('SELECT 1 AS one FROM model_versions WHERE model = ? LIMIT 1', [model]);
        throw any.length
          ? new RegistryError('VERSION_NOT_FOUND', `model ${model} has no version ${version}`)
          : new RegistryError('MODEL_NOT_FOUND', `model ${model} is not registered`);
      }
      const prev = await tx.query<{ version: number | string }>('SELECT version FROM model_aliases WHERE model = ? AND alias = ?', [model, alias]);
      const previousVersion = prev[0] ? Number(prev[0].version) : null;
      if (o.expectPrevious !== undefined && o.expectPrevious !== previousVersion && previousVersion !== version) {
        throw new RegistryError(
          'ALIAS_MOVED',
          `${alias} of ${model} moved to ${previousVersion === null ? 'no version' : `version ${previousVersion}`} while version ${version} was compared with ${o.expectPrevious === null ? 'no version' : `version ${o.expectPrevious}`}`,
        );
      }
      const at = this.now().toISOString();
      await tx.run(
        'INSERT INTO model_aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at',
        [model, alias, version, at],
      );
      if (previousVersion !== version) {
        const seq = await tx.query<{ s: number | string | null }>('SELECT MAX(seq) AS s FROM model_alias_events WHERE model = ? AND alias = ?', [model, alias]);
        await tx.run('INSERT INTO model_alias_events (model, alias, seq, version, previous_version, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
          model,
          alias,
          Number(seq[0]?.s ?? 0) + 1,
          version,
          previousVersion,
          reason,
          at,
        ]);
      }
      return { alias: { model, alias, version, updatedAt: at }, previousVersion };
    });
  }

  /** Points `production` back at an earlier version. One call. */
  async rollback(model: string, toVersion: number, alias = PRODUCTION_ALIAS): Promise<{ from: number; to: number }> {
    const current = await this.resolveAlias(model, alias);
    if (!current) {
      if (!(await this.hasModel(model))) throw new RegistryError('MODEL_NOT_FOUND', `model ${model} is not registered`);
      throw new RegistryError('ALIAS_NOT_SET', `model ${model} has no ${alias} version to roll back from`);
    }
    if (toVersion >= current.version) {
      throw new RegistryError(
        'BAD_ROLLBACK',
        `rollback goes to an earlier version: ${alias} of ${model} is version ${current.version}, asked for ${toVersion} (use promote to move forward)`,
      );
    }
    await this.setAlias(model, alias, toVersion, 'rollback');
    return { from: current.version, to: toVersion };
  }

  async aliasHistory(model: string, alias = PRODUCTION_ALIAS): Promise<AliasEvent[]> {
    const rows = await this.db.query<{
      model: string;
      alias: string;
      version: number | string;
      previous_version: number | string | null;
      reason: string;
      at: string;
    }>('SELECT model, alias, version, previous_version, reason, at FROM model_alias_events WHERE model = ? AND alias = ? ORDER BY seq', [model, alias]);
    return rows.map((r) => ({
      model: r.model,
      alias: r.alias,
      version: Number(r.version),
      previousVersion: r.previous_version === null ? null : Number(r.previous_version),
      reason: r.reason,
      at: r.at,
    }));
  }
}

/**
 * The owner's token or an admin may write; nobody else. A name with no owner row but with versions
 * (registered before owners were recorded) and a row without a token are admins' only.
 */
function mayWrite(owner: ModelOwner | undefined, who: Claimant): boolean {
  if (who.admin) return true;
  return !!owner?.tokenId && !!who.tokenId && owner.tokenId === who.tokenId;
}

/** Why a principal may not write to `model` (shared with core:deploy and the API); it does not name the owner (an admin reads RegisteredModel.owner). */
export function nameTakenMessage(model: string, owner: ModelOwner | undefined): string {
  const by = owner?.tokenId ? 'another token' : 'admins only (it has no owning token; an admin may grant it with setModelOwner)';
  return `model name ${model} belongs to ${by}; registering versions of it or moving its aliases needs the owning token or an admin's`;
}

async function hasVersions(db: Db, model: string): Promise<boolean> {
  return (await db.query('SELECT 1 AS one FROM model_versions WHERE model = ? LIMIT 1', [model])).length > 0;
}

async function ownerIn(db: Db, model: string): Promise<ModelOwner | undefined> {
  const rows = await db.query<{
    model: string;
    pipeline: string;
    run_id: string;
    claimed_at: string;
    token_id: string | null;
    token_name: string | null;
    granted_by: string | null;
  }>('SELECT model, pipeline, run_id, claimed_at, token_id, token_name, granted_by FROM model_owners WHERE model = ?', [model]);
  const r = rows[0];
  return r
    ? {
        model: r.model,
        tokenId: r.token_id ?? null,
        name: r.token_name ?? null,
        pipeline: r.pipeline,
        runId: r.run_id,
        claimedAt: r.claimed_at,
        grantedBy: r.granted_by ?? null,
      }
    : undefined;
}

function checkName(model: string): void {
  if (!MODEL_NAME_RE.test(model)) throw new RegistryError('BAD_MODEL_NAME', `model name ${JSON.stringify(model)} must match ${MODEL_NAME_RE}`);
}

function toVersion(r: VersionRow): ModelVersion {
  return {
    model: r.model,
    version: Number(r.version),
    runId: r.run_id,
    stageId: r.stage_id,
    artifactUri: r.artifact_uri,
    format: (MODEL_FORMATS as readonly string[]).includes(r.format) ? (r.format as ModelFormat) : 'tfjs-layers',
    sha256: r.sha256,
    bytes: Number(r.bytes),
    metrics: JSON.parse(r.metrics) as ModelMetrics,
    createdAt: r.created_at,
    ...(r.input_spec ? { inputSpec: JSON.parse(r.input_spec) as InputSpec } : {}),
  };
}
