import type { Migration } from '../lib/db/types.js';

const tables = `
CREATE TABLE ledger_usage (
  run_id TEXT NOT NULL,
  stage_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  replica INTEGER NOT NULL,
  pipeline TEXT NOT NULL,
  plugin TEXT NOT NULL,
  resource TEXT NOT NULL,
  wall_ms BIGINT NOT NULL,
  cpu_ms BIGINT NOT NULL,
  device_ms BIGINT NOT NULL,
  bytes_written BIGINT NOT NULL,
  succeeded INTEGER NOT NULL,
  recorded_at TEXT NOT NULL,
  PRIMARY KEY (run_id, stage_id, attempt, replica)
);
CREATE TABLE ledger_entries (
  id TEXT PRIMARY KEY,
  entry_key TEXT NOT NULL,
  version INTEGER NOT NULL,
  run_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  stage_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  category TEXT NOT NULL,
  amount_micros BIGINT NOT NULL,
  currency TEXT NOT NULL,
  quantity TEXT,
  unit TEXT,
  unit_price TEXT,
  description TEXT NOT NULL,
  reverses TEXT,
  occurred_at TEXT NOT NULL,
  booked_at TEXT NOT NULL
);
CREATE INDEX ledger_entries_run ON ledger_entries (run_id);
CREATE INDEX ledger_entries_key ON ledger_entries (entry_key);
CREATE INDEX ledger_entries_pipeline ON ledger_entries (pipeline, occurred_at);
CREATE TABLE ledger_run_revenue (
  run_id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  model TEXT NOT NULL,
  currency TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE ledger_predictions (
  id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  model TEXT NOT NULL,
  version TEXT NOT NULL,
  count BIGINT NOT NULL,
  at TEXT NOT NULL,
  recorded_at TEXT NOT NULL
);
CREATE INDEX ledger_predictions_run ON ledger_predictions (run_id);
`;

const usageV2 = `
CREATE TABLE ledger_usage_v2 (
  run_id TEXT NOT NULL,
  workflow_run_id TEXT NOT NULL,
  activity_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  stage_id TEXT NOT NULL,
  replica INTEGER NOT NULL,
  pipeline TEXT NOT NULL,
  plugin TEXT NOT NULL,
  resource TEXT NOT NULL,
  wall_ms BIGINT NOT NULL,
  cpu_ms BIGINT NOT NULL,
  device_ms BIGINT NOT NULL,
  gpu_ms BIGINT NOT NULL,
  gpu_devices TEXT NOT NULL,
  bytes_written BIGINT NOT NULL,
  bytes_kept BIGINT,
  metered INTEGER NOT NULL,
  succeeded INTEGER NOT NULL,
  recorded_at TEXT NOT NULL,
  PRIMARY KEY (run_id, workflow_run_id, activity_id, attempt)
);
INSERT INTO ledger_usage_v2 (run_id, workflow_run_id, activity_id, attempt, stage_id, replica, pipeline, plugin, resource,
  wall_ms, cpu_ms, device_ms, gpu_ms, gpu_devices, bytes_written, bytes_kept, metered, succeeded, recorded_at)
SELECT run_id, '', 'legacy:' || stage_id || ':' || CAST(replica AS TEXT), attempt, stage_id, replica, pipeline, plugin, resource,
  wall_ms, cpu_ms, device_ms, 0, '', bytes_written, NULL, 0, succeeded, recorded_at
FROM ledger_usage;
DROP TABLE ledger_usage;
ALTER TABLE ledger_usage_v2 RENAME TO ledger_usage;
CREATE INDEX ledger_usage_run ON ledger_usage (run_id, stage_id);
`;

const estimatesAndWatch = `
CREATE TABLE stage_profiles (
  run_id TEXT NOT NULL,
  stage_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  plugin TEXT NOT NULL,
  plugin_version TEXT NOT NULL,
  params_json TEXT NOT NULL,
  input_bytes BIGINT NOT NULL,
  output_bytes BIGINT NOT NULL,
  duration_ms BIGINT NOT NULL,
  recorded_at TEXT NOT NULL,
  PRIMARY KEY (run_id, stage_id)
);
CREATE INDEX stage_profiles_plugin ON stage_profiles (plugin, plugin_version, recorded_at);
CREATE TABLE roi_watches (
  run_id TEXT PRIMARY KEY,
  pipeline TEXT NOT NULL,
  min_roi TEXT NOT NULL,
  window_ms BIGINT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE roi_watch_state (
  model TEXT NOT NULL,
  version TEXT NOT NULL,
  run_id TEXT NOT NULL,
  below INTEGER NOT NULL,
  crossings INTEGER NOT NULL,
  last_roi TEXT,
  checked_at TEXT NOT NULL,
  PRIMARY KEY (model, version)
);
CREATE TABLE roi_alerts (
  id TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  version TEXT NOT NULL,
  run_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  crossing INTEGER NOT NULL,
  realised_roi TEXT NOT NULL,
  min_roi TEXT NOT NULL,
  window_ms BIGINT NOT NULL,
  revenue TEXT NOT NULL,
  cost_share TEXT NOT NULL,
  currency TEXT NOT NULL,
  started_runs TEXT NOT NULL,
  emitted INTEGER NOT NULL,
  at TEXT NOT NULL
);
CREATE INDEX roi_alerts_model ON roi_alerts (model, at);
`;

/**
 * Schema of the ledger. `ledger_entries` is append-only (triggers refuse UPDATE and DELETE): a
 * correction is a reversing entry. `id` is the idempotency key `<entry_key>#<version>`, with
 * entry_key = run|stage|kind|category[|n]; a reversal's id is `<reversed id>~reversal`.
 */
export const ledgerMigrations: Migration[] = [
  {
    id: 'ledger/0001-init',
    sql: {
      sqlite: `${tables}
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: book a reversing entry instead'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: book a reversing entry instead'); END;
`,
      postgres: `${tables}
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION 'ledger_entries is append-only: book a reversing entry instead';
END;
$fn$;
CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
`,
    },
  },
  {
    // Usage keyed by what Temporal knows of the attempt, so operator retries (new rounds) and
    // resets (new workflow runs) are new lines; metered CPU and GPU time; bytes kept. Existing rows
    // are copied with `metered = 0` (priced as before: device time at the declared resource's rate)
    // and a legacy activity id that keeps their old key unique.
    id: 'ledger/0002-usage-keys',
    sql: {
      sqlite: `${usageV2}
ALTER TABLE ledger_run_revenue ADD COLUMN booking TEXT;
`,
      // Writers of an older version wait (then fail and retry) instead of inserting between the copy and the drop.
      postgres: `LOCK TABLE ledger_usage IN SHARE ROW EXCLUSIVE MODE;
${usageV2}
ALTER TABLE ledger_run_revenue ADD COLUMN booking TEXT;
`,
    },
  },
  {
    // What estimates learn from (a profile per successful stage: plugin version, params, sizes and
    // duration; its usage is in ledger_usage), and the ROI watch: the threshold a run declared, the
    // state per deployed model version (below or not, crossings so far) and the alerts raised.
    id: 'ledger/0003-estimates-roi-watch',
    sql: estimatesAndWatch,
  },
  {
    // Usage written while an attempt runs (at every heartbeat), replaced under its usage key by
    // later partial records and by the attempt's final one: a killed worker loses at most one
    // interval. Existing rows are final.
    id: 'ledger/0004-partial-usage',
    sql: 'ALTER TABLE ledger_usage ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;',
  },
];
