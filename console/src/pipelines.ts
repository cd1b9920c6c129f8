import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { gql } from './api.js';
import { LineChart, StackedBars } from './charts.js';
import { money, roi, runHref, when } from './format.js';
import type { Me } from './main.js';

interface RunMoney {
  runId: string;
  at: string;
  currency: string | null;
  cost: string;
  revenue: string;
  realisedRevenue: string;
  roi: string | null;
  byStage: { key: string; cost: string }[];
  byResource: { key: string; cost: string }[];
}

/** Pipelines and money: cost per run stacked by stage or resource, revenue expected vs realised, ROI; saved pipelines, schedules, triggers. */
export function PipelinesPage(_: { me: Me }) {
  const [names, setNames] = useState<string[] | null>(null);
  const [saved, setSaved] = useState<{ name: string; triggers: string[]; updatedAt: string }[]>([]);
  const [schedules, setSchedules] = useState<{ id: string; pipeline: string; cron: string[]; every: string[]; paused: boolean; nextActionTimes: string[] }[]>(
    [],
  );
  const [pipeline, setPipeline] = useState('');
  const [by, setBy] = useState<'stage' | 'resource'>('stage');
  const [runs, setRuns] = useState<RunMoney[]>([]);
  const [total, setTotal] = useState<{
    cost: string;
    revenue: string;
    realisedRevenue: string;
    roi: string | null;
    realisedRoi: string | null;
    currency: string | null;
    runs: number;
  } | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    gql<{ ledgerPipelines: string[]; savedPipelines: typeof saved; schedules: typeof schedules }>(
      '{ ledgerPipelines savedPipelines { name triggers updatedAt } schedules { id pipeline cron every paused nextActionTimes } }',
    )
      .then((r) => {
        setNames(r.ledgerPipelines);
        setSaved(r.savedPipelines);
        setSchedules(r.schedules);
        if (r.ledgerPipelines[0]) setPipeline((p) => p || r.ledgerPipelines[0]!);
      })
      .catch((e: Error) => setError(e.message));
  }, []);
  useEffect(() => {
    if (!pipeline) return;
    gql<{ roiByRun: RunMoney[]; roi: typeof total }>(
      'query($p: String!) { roiByRun(pipeline: $p, last: 60) { runId at currency cost revenue realisedRevenue roi byStage { key cost } byResource { key cost } } roi(pipeline: $p) { cost revenue realisedRevenue roi realisedRoi currency runs } }',
      { p: pipeline },
    )
      .then((r) => {
        setRuns(r.roiByRun);
        setTotal(r.roi);
      })
      .catch((e: Error) => setError(e.message));
  }, [pipeline]);
  const xs = runs.map((_, i) => i + 1);
  return html`<h1>Pipelines and money</h1>
    ${error && html`<p role="alert" class="error">${error}</p>`}
    <form class="filters" onSubmit=${(e: Event) => e.preventDefault()}>
      <label>Pipeline
        <select name="pipeline" value=${pipeline} onChange=${(e: Event) => setPipeline((e.target as HTMLSelectElement).value)}>
          ${(names ?? []).map((n) => html`<option value=${n}>${n}</option>`)}
        </select>
      </label>
      <fieldset class="inline"><legend>Stack cost by</legend>
        <label><input type="radio" name="by" checked=${by === 'stage'} onChange=${() => setBy('stage')} /> stage</label>
        <label><input type="radio" name="by" checked=${by === 'resource'} onChange=${() => setBy('resource')} /> resource</label>
      </fieldset>
    </form>
    ${names && names.length === 0 && html`<p class="hint">No pipeline has booked money yet (the roi-ledger stage books it).</p>`}
    ${
      total &&
      html`<dl class="facts" data-testid="pipeline-totals">
      <div><dt>Runs</dt><dd>${total.runs}</dd></div>
      <div><dt>Cost</dt><dd>${money(total.cost, total.currency)}</dd></div>
      <div><dt>Expected revenue</dt><dd>${money(total.revenue, total.currency)}</dd></div>
      <div><dt>Realised revenue</dt><dd>${money(total.realisedRevenue, total.currency)}</dd></div>
      <div><dt>ROI (expected / realised)</dt><dd>${roi(total.roi)} / ${roi(total.realisedRoi)}</dd></div>
    </dl>`
    }
    ${
      runs.length > 0 &&
      html`<${StackedBars} title=${`Cost per run by ${by} (oldest → newest)`} unit=${runs[0]?.currency ?? ''}
        columns=${runs.map((r, i) => ({ label: `#${i + 1}`, parts: (by === 'stage' ? r.byStage : r.byResource).map((b) => ({ key: b.key, value: Number(b.cost) })) }))} />
      <${LineChart} title="Revenue per run: expected vs realised" xLabel="run #" xs=${xs} width=${720}
        series=${[
          { label: 'cost', values: runs.map((r) => Number(r.cost)) },
          { label: 'expected revenue', values: runs.map((r) => Number(r.revenue)) },
          { label: 'realised revenue', values: runs.map((r) => Number(r.realisedRevenue)), dash: [6, 4] },
        ]} />
      <${LineChart} title="ROI per run (expected, %)" xLabel="run #" xs=${xs} width=${720} series=${[{ label: 'ROI %', values: runs.map((r) => (r.roi === null ? null : Number(r.roi) * 100)) }]} />
      <div class="scroll"><table>
        <thead><tr><th scope="col">#</th><th scope="col">Run</th><th scope="col">When</th><th scope="col">Cost</th><th scope="col">Expected</th><th scope="col">Realised</th><th scope="col">ROI</th></tr></thead>
        <tbody>${runs.map((r, i) => html`<tr><td>${i + 1}</td><td><a href=${runHref(r.runId)}>${r.runId}</a></td><td>${when(r.at)}</td><td class="num">${money(r.cost, r.currency)}</td><td class="num">${money(r.revenue, r.currency)}</td><td class="num">${money(r.realisedRevenue, r.currency)}</td><td class="num">${roi(r.roi)}</td></tr>`)}</tbody>
      </table></div>`
    }
    <h2>Saved pipelines and triggers</h2>
    ${saved.length === 0 ? html`<p class="hint">None saved.</p>` : html`<ul>${saved.map((s) => html`<li><strong>${s.name}</strong> — ${s.triggers.length ? `starts on ${s.triggers.join(', ')}` : 'no triggers'} · saved ${when(s.updatedAt)}</li>`)}</ul>`}
    <h2>Schedules</h2>
    ${schedules.length === 0 ? html`<p class="hint">No schedules.</p>` : html`<ul>${schedules.map((s) => html`<li><code>${s.id}</code> ${s.pipeline}: ${[...s.cron, ...s.every.map((e) => `every ${e}`)].join(', ')}${s.paused ? ' (paused)' : ''} · next ${when(s.nextActionTimes[0])}</li>`)}</ul>`}`;
}
