import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const ops = path.join(root, 'ops');
/** From Debian's `prometheus` package: test/setup/prometheus.ts finds or installs it. */
const PROMTOOL = process.env.PROMTOOL_PATH ?? '/usr/bin/promtool';

async function promtool(args: string[], cwd: string): Promise<string> {
  try {
    const { stdout, stderr } = await run(PROMTOOL, args, { cwd, timeout: 60_000 });
    return stdout + stderr;
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`promtool ${args.join(' ')} failed:\n${x.stdout ?? ''}${x.stderr ?? x.message}`);
  }
}

interface Contract {
  metrics: { name: string; type: 'counter' | 'gauge' | 'histogram'; job: string; labels: string[] }[];
  /** The Temporal SDK's worker metrics, as its exporter names them by default. */
  sdk: { name: string; type: 'counter' | 'gauge' | 'histogram'; labels: string[] }[];
}
const contract = JSON.parse(readFileSync(path.join(ops, 'metrics.json'), 'utf8')) as Contract;

/** The capstan_* and temporal_* series names a text uses (a histogram's _bucket/_sum/_count as its own name). */
function metricNames(text: string): string[] {
  return [...text.matchAll(/\b(?:capstan|temporal)_[a-z0-9_]+/g)].map((m) => m[0]);
}
const all = [...contract.metrics, ...contract.sdk];
const histograms = new Set(all.filter((m) => m.type === 'histogram').map((m) => m.name));
const known = new Set(all.map((m) => m.name));
function inContract(series: string): boolean {
  if (known.has(series)) return true;
  const base = series.replace(/_(bucket|sum|count)$/, '');
  return base !== series && histograms.has(base);
}

interface Panel {
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: { expr?: string; refId: string }[];
  panels?: Panel[];
}
interface RuleFile {
  groups: { name: string; rules: { alert?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[];
}

describe('the alerting rules', () => {
  it('pass promtool check rules', async () => {
    const out = await promtool(['check', 'rules', 'alerts.yml'], path.join(ops, 'prometheus'));
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('fire on synthetic series as their unit tests expect, and stay quiet on the near-misses (promtool test rules)', async () => {
    const out = await promtool(['test', 'rules', 'alerts.test.yml'], path.join(ops, 'prometheus'));
    expect(out).toContain('SUCCESS');
    // Every alert is driven by at least one case that expects it to fire.
    const rules = parseYaml(readFileSync(path.join(ops, 'prometheus', 'alerts.yml'), 'utf8')) as RuleFile;
    const tests = parseYaml(readFileSync(path.join(ops, 'prometheus', 'alerts.test.yml'), 'utf8')) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const fired = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    const quiet = tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length === 0));
    const alerts = rules.groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a): a is string => !!a);
    expect([...fired].sort()).toEqual([...alerts].sort());
    expect(quiet.length).toBeGreaterThan(0);
  });

  it('each alert has a severity, a summary, a description that says what to do and a runbook in docs/observability.md', () => {
    const rules = parseYaml(readFileSync(path.join(ops, 'prometheus', 'alerts.yml'), 'utf8')) as RuleFile;
    const docs = readFileSync(path.join(root, 'docs', 'observability.md'), 'utf8');
    for (const r of rules.groups.flatMap((g) => g.rules)) {
      expect(r.alert, r.expr).toBeTruthy();
      expect(['critical', 'warning', 'info'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description?.length ?? 0, r.alert).toBeGreaterThan(80);
      expect(r.annotations?.runbook, r.alert).toBe(`docs/observability.md#${r.alert!.toLowerCase()}`);
      // The runbook's heading (its anchor is the alert's name in lower case).
      expect(docs, `a runbook heading for ${r.alert}`).toMatch(new RegExp(`^#### ${r.alert}$`, 'm'));
    }
  });
});

describe('the example Prometheus configuration', () => {
  it('passes promtool check config (with its rule file and a token file next to it)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-prom-config-'));
    for (const f of ['prometheus.example.yml', 'alerts.yml']) copyFileSync(path.join(ops, 'prometheus', f), path.join(dir, f));
    writeFileSync(path.join(dir, 'capstan-metrics-token'), 'a-scrape-token\n', { mode: 0o600 });
    const out = await promtool(['check', 'config', 'prometheus.example.yml'], dir);
    expect(out).toMatch(/SUCCESS: prometheus\.example\.yml is valid prometheus config file syntax/);
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
    const cfg = parseYaml(readFileSync(path.join(ops, 'prometheus', 'prometheus.example.yml'), 'utf8')) as { scrape_configs: { job_name: string }[] };
    // The job names the rules and the dashboard expect.
    expect(cfg.scrape_configs.map((s) => s.job_name).sort()).toEqual(['capstan-api', 'capstan-worker']);
  });
});

describe('the Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(path.join(ops, 'grafana', 'capstan.json'), 'utf8')) as {
    uid: string;
    title: string;
    panels: Panel[];
    templating: { list: { name: string; type: string; query: unknown }[] };
  };
  const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');

  it('parses, picks its Prometheus through a datasource variable, and every panel has a target with an expression', () => {
    expect(dashboard.uid).toBe('capstan-overview');
    expect(dashboard.templating.list.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(panels.length).toBeGreaterThan(20);
    for (const p of panels) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal Grafana dashboard variable reference (`${datasource}`), not a JS template
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets?.length ?? 0, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) expect(t.expr?.trim(), `${p.title} ${t.refId}`).toBeTruthy();
    }
    const ids = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).map((p) => (p as { id?: number }).id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('every expression is valid PromQL once Grafana has put in its variables (checked by promtool as recording rules)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'capstan-dashboard-exprs-'));
    const grafanaVars = (e: string) => e.replaceAll('$__rate_interval', '5m').replaceAll('$__range', '6h').replaceAll('$pipeline', '.*');
    const rules = panels.flatMap((p, i) => p.targets!.map((t) => ({ record: `dashboard:panel${i}:${t.refId}`, expr: grafanaVars(t.expr!) })));
    for (const r of rules) expect(r.expr, r.record).not.toContain('$');
    writeFileSync(path.join(dir, 'dashboard.rules.yml'), JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
    const out = await promtool(['check', 'rules', 'dashboard.rules.yml'], dir);
    expect(out).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  it('covers what an operator watches: one panel per topic', () => {
    const exprs = panels.flatMap((p) => p.targets!.map((t) => t.expr!)).join('\n');
    for (const m of [
      'capstan_runs{',
      'capstan_stage_duration_seconds_bucket',
      'capstan_stage_retries_total',
      'capstan_stage_pauses_total',
      'capstan_slot_wait_seconds_bucket',
      'capstan_slot_queue_depth',
      'capstan_slot_capacity',
      'capstan_budget_paused_runs',
      'capstan_ledger_cost_total',
      'capstan_ledger_revenue_total',
      'capstan_roi_realised',
      'capstan_predictions_total',
      'capstan_prediction_duration_seconds_bucket',
      'capstan_graphql_request_duration_seconds_bucket',
      'temporal_activity_schedule_to_start_latency_bucket',
      'temporal_worker_task_slots_available',
    ])
      expect(exprs, m).toContain(m);
  });
});

describe('the metric names the dashboard and the rules use are the contract (ops/metrics.json)', () => {
  it('every capstan_* and temporal_* name in the dashboard, the rules and the rules’ tests is listed', () => {
    const dashboard = readFileSync(path.join(ops, 'grafana', 'capstan.json'), 'utf8');
    const rules = readFileSync(path.join(ops, 'prometheus', 'alerts.yml'), 'utf8');
    const tests = readFileSync(path.join(ops, 'prometheus', 'alerts.test.yml'), 'utf8');
    const used = new Set([...metricNames(dashboard), ...metricNames(rules), ...metricNames(tests)]);
    expect(used.size).toBeGreaterThan(20);
    const unknown = [...used].filter((n) => !inContract(n));
    expect(unknown, 'names not in ops/metrics.json').toEqual([]);
  });

  it('the contract matches the metric table in docs/observability.md', () => {
    const docs = readFileSync(path.join(root, 'docs', 'observability.md'), 'utf8');
    for (const m of contract.metrics) expect(docs, m.name).toContain(`\`${m.name}\``);
  });
});
