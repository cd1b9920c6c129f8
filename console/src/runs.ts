import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { gql } from './api.js';
import { duration, money, roi, runHref, when } from './format.js';
import type { Me } from './main.js';

const STATUSES = ['RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'TIMED_OUT'];
const PAGE = 20;

const RUNS = `query($pipeline: String, $status: RunStatus, $first: Int, $after: String) {
  runs(pipeline: $pipeline, status: $status, first: $first, after: $after) {
    edges { cursor node { id pipeline status startedAt closedAt tfBackend roi { cost revenue roi currency } } }
    pageInfo { hasNextPage endCursor }
  }
}`;

interface Row {
  id: string;
  pipeline: string;
  status: string;
  startedAt: string | null;
  closedAt: string | null;
  tfBackend: string | null;
  roi: { cost: string; revenue: string; roi: string | null; currency: string } | null;
}

/** Runs: filters by pipeline and status, pages of 20, refreshed every few seconds. */
export function RunsPage(_: { me: Me }) {
  const [pipeline, setPipeline] = useState('');
  // What is typed, kept apart from the applied filter: the list refreshes every few seconds, and a
  // re-render must not put the old filter back into the box before Enter or blur applies it.
  const [typed, setTyped] = useState('');
  const [status, setStatus] = useState('');
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [rows, setRows] = useState<Row[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState('');
  const after = cursors[cursors.length - 1] ?? null;
  useEffect(() => {
    let stop = false;
    const load = () =>
      gql<{ runs: { edges: { node: Row }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } }>(RUNS, {
        pipeline: pipeline || null,
        status: status || null,
        first: PAGE,
        after,
      })
        .then((r) => {
          if (stop) return;
          setRows(r.runs.edges.map((e) => e.node));
          setNext(r.runs.pageInfo.hasNextPage ? r.runs.pageInfo.endCursor : null);
          setError('');
        })
        .catch((e: Error) => !stop && setError(e.message));
    void load();
    const t = setInterval(load, 4000);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, [pipeline, status, after]);
  const reset = () => setCursors([null]);
  return html`<h1>Runs</h1>
    <form class="filters" onSubmit=${(e: Event) => e.preventDefault()}>
      <label>Pipeline <input name="pipeline" value=${typed} onInput=${(e: Event) => setTyped((e.target as HTMLInputElement).value)} onChange=${(e: Event) => {
        setPipeline((e.target as HTMLInputElement).value.trim());
        reset();
      }} placeholder="all" /></label>
      <label>Status
        <select name="status" value=${status} onChange=${(e: Event) => {
          setStatus((e.target as HTMLSelectElement).value);
          reset();
        }}>
          <option value="">all</option>
          ${STATUSES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
        </select>
      </label>
      <span aria-live="polite" class="hint">${rows ? `${rows.length} run(s) on this page · live` : 'loading…'}</span>
    </form>
    ${error && html`<p role="alert" class="error">${error}</p>`}
    <div class="scroll">
      <table data-testid="runs-table">
        <thead><tr><th scope="col">Run</th><th scope="col">Status</th><th scope="col">Pipeline</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Backend</th><th scope="col">Cost</th><th scope="col">Revenue</th><th scope="col">ROI</th></tr></thead>
        <tbody>
          ${(rows ?? []).map(
            (r) => html`<tr>
              <td><a href=${runHref(r.id)}>${r.id}</a></td>
              <td><span class=${`status s-${r.status}`}>${r.status.toLowerCase()}</span></td>
              <td>${r.pipeline}</td>
              <td>${when(r.startedAt)}</td>
              <td>${duration(r.startedAt, r.closedAt)}</td>
              <td>${r.tfBackend ?? '—'}</td>
              <td class="num">${money(r.roi?.cost, r.roi?.currency)}</td>
              <td class="num">${money(r.roi?.revenue, r.roi?.currency)}</td>
              <td class="num">${roi(r.roi?.roi)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
    </div>
    <nav class="pager" aria-label="Pages of runs">
      <button disabled=${cursors.length <= 1} onClick=${() => setCursors(cursors.slice(0, -1))}>← Newer</button>
      <span>page ${cursors.length}</span>
      <button disabled=${!next} onClick=${() => next && setCursors([...cursors, next])}>Older →</button>
    </nav>`;
}
