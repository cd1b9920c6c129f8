import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, gql, subscribe } from './api.js';
import { Gantt, LineChart, type GanttBar } from './charts.js';
import { bytes, duration, money, roi, when } from './format.js';
import { can, type Me } from './main.js';
import { validate, type SchemaIssue } from './schema.js';

const RUN = `query($id: ID!) {
  run(id: $id) {
    id runId pipeline status startedAt closedAt tfBackend temporalUrl traceId traceUrl pausedStages resumedFrom
    roi { cost revenue roi realisedRevenue currency }
    events { seq at type stageId message }
    stages {
      id plugin status attempts startedAt closedAt error errorType params needs replicas metrics progress currentAttempt reusedFrom
      wait { reason since message queue slotsNeeded capacity free position queueLength round waitingReplicas waitingForReplicas }
      outputs { kind uri sha256 bytes }
      attemptHistory { activityId round attempt replica role startedAt closedAt outcome error }
      epochs { round attempt replica epoch trainLoss trainAccuracy valLoss valAccuracy }
    }
  }
  stagePlugins { name paramsSchema }
}`;

interface Attempt {
  activityId: string;
  round: number;
  attempt: number;
  replica: number | null;
  role: 'RUN' | 'REDUCE';
  startedAt: string;
  closedAt: string | null;
  outcome: string;
  error: string | null;
}
interface Epoch {
  round: number;
  attempt: number;
  replica: number | null;
  epoch: number;
  trainLoss: number | null;
  trainAccuracy: number | null;
  valLoss: number | null;
  valAccuracy: number | null;
}
/** Why a stage waits (StageRun.wait): its slots on a queue, or replicas at a round barrier. */
interface StageWait {
  reason: 'SLOTS' | 'BARRIER';
  since: string;
  message: string;
  queue: string | null;
  slotsNeeded: number | null;
  capacity: number | null;
  free: number | null;
  position: number | null;
  queueLength: number | null;
  round: number | null;
  waitingReplicas: number[];
  waitingForReplicas: number[];
}
interface Stage {
  id: string;
  plugin: string;
  status: string;
  attempts: number;
  startedAt: string | null;
  closedAt: string | null;
  error: string | null;
  errorType: string | null;
  params: unknown;
  needs: string[];
  replicas: number;
  metrics: Record<string, unknown>;
  progress: unknown;
  currentAttempt: number | null;
  reusedFrom: string | null;
  wait: StageWait | null;
  outputs: { kind: string; uri: string; sha256: string; bytes: number }[];
  attemptHistory: Attempt[];
  epochs: Epoch[];
}
interface Run {
  id: string;
  runId: string | null;
  pipeline: string;
  status: string;
  startedAt: string | null;
  closedAt: string | null;
  tfBackend: string | null;
  temporalUrl: string | null;
  /** The run's OpenTelemetry trace, and its address in the trace UI (CAPSTAN_TRACE_UI_URL); null when either is unknown. */
  traceId: string | null;
  traceUrl: string | null;
  pausedStages: string[];
  resumedFrom: string | null;
  roi: { cost: string; revenue: string; roi: string | null; realisedRevenue: string; currency: string } | null;
  events: { seq: number; at: string; type: string; stageId: string | null; message: string | null }[];
  stages: Stage[];
}

const OPEN = ['RUNNING', 'PAUSED'];

/** A run: header, timeline, training curves, stages, decisions; live over the runEvents stream. */
export function RunPage(props: { id: string; me: Me }) {
  const [run, setRun] = useState<Run | null | undefined>(undefined);
  const [schemas, setSchemas] = useState<Record<string, unknown>>({});
  const [error, setError] = useState('');
  const [live, setLive] = useState(false);
  const load = () =>
    gql<{ run: Run | null; stagePlugins: { name: string; paramsSchema: unknown }[] }>(RUN, { id: props.id })
      .then((r) => {
        setRun(r.run);
        setSchemas(Object.fromEntries(r.stagePlugins.map((p) => [p.name, p.paramsSchema])));
      })
      .catch((e: Error) => setError(e.message));
  useEffect(() => {
    void load();
  }, [props.id]);
  // Live: the SSE stream says something happened; the page reads the run again (at most every 700 ms).
  const open = run ? OPEN.includes(run.status) : false;
  useEffect(() => {
    if (!open) return;
    const ac = new AbortController();
    let pending: ReturnType<typeof setTimeout> | undefined;
    setLive(true);
    subscribe(
      'subscription($id: ID!) { runEvents(runId: $id) { seq type stageId runStatus } }',
      { id: props.id },
      () => {
        pending ??= setTimeout(() => {
          pending = undefined;
          void load();
        }, 700);
      },
      ac.signal,
    )
      .catch(() => {})
      .finally(() => {
        setLive(false);
        if (!ac.signal.aborted) setTimeout(() => void load(), 300);
      });
    return () => {
      ac.abort();
      clearTimeout(pending);
    };
  }, [props.id, open]);

  if (run === undefined) return html`<p>${error || 'Loading…'}</p>`;
  if (run === null) return html`<h1>Run not found</h1><p>No run has the id <code>${props.id}</code>.</p>`;
  return html`<h1>Run <code>${run.id}</code></h1>
    <dl class="facts" data-testid="run-facts">
      <div><dt>Status</dt><dd><span class=${`status s-${run.status}`} data-testid="run-status">${run.status.toLowerCase()}</span>${live ? html` <span class="hint">· live</span>` : ''}</dd></div>
      <div><dt>Pipeline</dt><dd>${run.pipeline}</dd></div>
      <div><dt>Started</dt><dd>${when(run.startedAt)}</dd></div>
      <div><dt>Duration</dt><dd>${duration(run.startedAt, run.closedAt)}</dd></div>
      <div><dt>Backend</dt><dd>${run.tfBackend ?? '—'}</dd></div>
      <div><dt>Cost / revenue / ROI</dt><dd>${money(run.roi?.cost, run.roi?.currency)} / ${money(run.roi?.revenue, run.roi?.currency)} / ${roi(run.roi?.roi)}</dd></div>
      ${run.resumedFrom && html`<div><dt>Resumes</dt><dd><a href=${`#/runs/${encodeURIComponent(run.resumedFrom)}`}>${run.resumedFrom}</a></dd></div>`}
      ${run.temporalUrl && html`<div><dt>Temporal</dt><dd><a href=${run.temporalUrl} target="_blank" rel="noopener" data-testid="temporal-link">open in the Temporal Web UI ↗</a></dd></div>`}
      ${run.traceUrl && /^https?:\/\//i.test(run.traceUrl) && html`<div><dt>Trace</dt><dd><a href=${run.traceUrl} target="_blank" rel="noopener" data-testid="trace-link">trace ${run.traceId?.slice(0, 8) ?? ''}… ↗</a></dd></div>`}
    </dl>
    ${error && html`<p role="alert" class="error">${error}</p>`}
    ${can.operate(props.me) && run.status !== 'COMPLETED' && html`<${Decisions} run=${run} schemas=${schemas} reload=${load} />`}
    <section aria-labelledby="tl"><h2 id="tl">Timeline</h2><${Timeline} run=${run} /></section>
    <section aria-labelledby="cv"><h2 id="cv">Training curves</h2><${Curves} run=${run} /></section>
    <section aria-labelledby="st"><h2 id="st">Stages</h2><${StageTable} run=${run} /></section>
    <section aria-labelledby="ev"><h2 id="ev">Events</h2>
      <ol class="events">${run.events.map((e) => html`<li><time>${when(e.at)}</time> <strong>${e.type}</strong>${e.stageId ? ` ${e.stageId}` : ''}${e.message ? ` — ${e.message}` : ''}</li>`)}</ol>
    </section>`;
}

function Timeline(props: { run: Run }) {
  const { run } = props;
  const now = Date.now();
  const end = run.closedAt ? Date.parse(run.closedAt) : now;
  const lanes: string[] = [];
  const bars: GanttBar[] = [];
  for (const s of run.stages) {
    const laneOf = (a: Attempt) => (a.role === 'REDUCE' ? `${s.id} · reduce` : a.replica !== null ? `${s.id} · replica ${a.replica}` : s.id);
    const own = s.attemptHistory.map(laneOf);
    const stageLanes = own.length ? [...new Set(own)] : [s.id];
    const waits = waitBars(run, s, stageLanes, end, now);
    // A wait for the stage's slots concerns all its replicas: it gets the stage's own lane, first.
    if (waits.some((b) => b.lane === s.id) && !stageLanes.includes(s.id)) lanes.push(s.id);
    lanes.push(...stageLanes);
    bars.push(...waits);
    for (const a of s.attemptHistory) {
      const t0 = Date.parse(a.startedAt);
      const t1 = a.closedAt ? Date.parse(a.closedAt) : a.outcome === 'RUNNING' && !OPEN.includes(run.status) ? end : now;
      const retry = a.round > 0 ? `operator retry ${a.round}, ` : '';
      bars.push({
        lane: laneOf(a),
        start: t0,
        end: t1,
        kind: a.outcome,
        testid: 'attempt-bar',
        label: `${s.id}: ${retry}attempt ${a.attempt}${a.replica !== null ? ` (replica ${a.replica})` : ''}${a.role === 'REDUCE' ? ' (reduce)' : ''} ${a.outcome.toLowerCase()}, ${duration(a.startedAt, a.closedAt ?? new Date(t1).toISOString())}${a.error ? ` — ${a.error}` : ''}`,
      });
    }
    // Pauses: from RUN_PAUSED on this stage to the decision (RUN_RESUMED) or the run's end.
    const evs = run.events.filter((e) => e.stageId === s.id && (e.type === 'RUN_PAUSED' || e.type === 'RUN_RESUMED'));
    evs.forEach((e, i) => {
      if (e.type !== 'RUN_PAUSED') return;
      const resumed = evs.slice(i + 1).find((x) => x.type === 'RUN_RESUMED');
      const t1 = resumed ? Date.parse(resumed.at) : end;
      bars.push({
        lane: stageLanes[0]!,
        start: Date.parse(e.at),
        end: t1,
        kind: 'PAUSED',
        testid: 'pause-bar',
        label: `${s.id}: paused for a decision, ${duration(e.at, new Date(t1).toISOString())}`,
      });
    });
  }
  if (!bars.length) return html`<p class="hint">No attempt has started yet.</p>`;
  const t0 = Math.min(...bars.map((b) => b.start));
  const t1 = Math.max(...bars.map((b) => b.end));
  return html`<div class="scroll"><${Gantt} lanes=${lanes} bars=${bars} t0=${t0} t1=${t1} /></div>
    <ul class="legend">
      <li><span class="swatch s-ok"></span>succeeded</li><li><span class="swatch s-fail"></span>failed</li>
      <li><span class="swatch s-run"></span>running</li><li><span class="swatch s-cancel"></span>cancelled</li><li><span class="swatch s-pause"></span>paused (waiting for a decision)</li>
      <li><span class="swatch s-wait"></span>waiting (for slots, or for other replicas)</li>
    </ul>`;
}

/**
 * Waiting bars of one stage: slot waits from STAGE_WAITING to STAGE_WAIT_ENDED (or on, while the
 * stage still waits: labelled with its live figures), and replicas waiting at a round barrier.
 */
function waitBars(run: Run, s: Stage, stageLanes: string[], end: number, now: number): GanttBar[] {
  const bars: GanttBar[] = [];
  const evs = run.events.filter((e) => e.stageId === s.id && (e.type === 'STAGE_WAITING' || e.type === 'STAGE_WAIT_ENDED'));
  evs.forEach((e, i) => {
    if (e.type !== 'STAGE_WAITING') return;
    const ended = evs[i + 1]?.type === 'STAGE_WAIT_ENDED' ? evs[i + 1] : undefined;
    const ongoing = !ended && s.wait?.reason === 'SLOTS' && OPEN.includes(run.status);
    const t1 = ended ? Date.parse(ended.at) : ongoing ? now : end;
    const took = duration(e.at, new Date(t1).toISOString());
    const why = ongoing ? s.wait!.message : `${e.message ?? 'waited for slots'}${ended?.message ? ` — ${ended.message}` : ''}`;
    bars.push({
      lane: s.id,
      start: Date.parse(e.at),
      end: t1,
      kind: 'WAITING',
      testid: 'wait-bar',
      label: `${s.id}: ${ongoing ? 'waiting' : 'waited'} ${took} — ${why}`,
    });
  });
  if (s.wait?.reason === 'BARRIER' && OPEN.includes(run.status)) {
    const w = s.wait;
    for (const r of w.waitingReplicas) {
      const lane = stageLanes.find((l) => l === `${s.id} · replica ${r}`) ?? stageLanes[0]!;
      bars.push({
        lane,
        start: Date.parse(w.since),
        end: now,
        kind: 'WAITING',
        testid: 'wait-bar',
        label: `${s.id}: replica ${r} waiting ${duration(w.since, new Date(now).toISOString())} — ${w.message}`,
      });
    }
  }
  return bars;
}

function Curves(props: { run: Run }) {
  const training = props.run.stages.filter((s) => s.epochs.length > 0);
  if (!training.length) return html`<p class="hint">No stage of this run has reported per-epoch metrics${OPEN.includes(props.run.status) ? ' yet' : ''}.</p>`;
  return html`<div class="curves">
    ${training.map((s) => {
      // The latest try (operator retry, then Temporal attempt); replicas are averaged per epoch.
      const last = s.epochs.reduce((m, e) => (e.round > m.round || (e.round === m.round && e.attempt > m.attempt) ? e : m), s.epochs[0]!);
      const rows = s.epochs.filter((e) => e.round === last.round && e.attempt === last.attempt);
      const xs = [...new Set(rows.map((e) => e.epoch))].sort((a, b) => a - b);
      const avg = (k: keyof Epoch) =>
        xs.map((x) => {
          const v = rows
            .filter((e) => e.epoch === x)
            .map((e) => e[k] as number | null)
            .filter((n): n is number => n !== null);
          return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
        });
      const acc = [
        { label: 'train accuracy', values: avg('trainAccuracy') },
        { label: 'validation accuracy', values: avg('valAccuracy'), dash: [6, 4] },
      ].filter((x) => x.values.some((v) => v !== null));
      const attemptNote = s.epochs.length > rows.length ? ` (latest try: round ${last.round}, attempt ${last.attempt})` : '';
      return html`<div class="curve-pair" data-testid=${`curves-${s.id}`}>
        <h3>${s.id} <span class="hint">${s.plugin}${attemptNote}</span></h3>
        <${LineChart} title=${`${s.id}: loss`} xLabel="epoch" xs=${xs} testid="loss-chart"
          series=${[
            { label: 'train loss', values: avg('trainLoss') },
            { label: 'validation loss', values: avg('valLoss'), dash: [6, 4] },
          ].filter((x) => x.values.some((v) => v !== null))} />
        ${acc.length > 0 && html`<${LineChart} title=${`${s.id}: accuracy`} xLabel="epoch" xs=${xs} testid="accuracy-chart" series=${acc} />`}
      </div>`;
    })}
  </div>`;
}

function StageTable(props: { run: Run }) {
  return html`<div class="scroll"><table data-testid="stage-table">
    <thead><tr><th scope="col">Stage</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Duration</th><th scope="col">Params</th><th scope="col">Metrics</th><th scope="col">Artifacts</th><th scope="col">Error</th></tr></thead>
    <tbody>
      ${props.run.stages.map(
        (s) => html`<tr data-stage=${s.id}>
          <th scope="row">${s.id}<br /><span class="hint">${s.plugin}${s.replicas > 1 ? ` · ${s.replicas} replicas` : ''}</span></th>
          <td><span class=${`status s-${s.status}`}>${s.status.toLowerCase()}</span>${s.reusedFrom ? html`<br /><span class="hint">from ${s.reusedFrom}</span>` : ''}${s.wait ? html`<br /><span class="hint" data-testid="stage-wait">${s.wait.message}</span>` : ''}</td>
          <td class="num">${s.attempts}${s.currentAttempt ? ` (running #${s.currentAttempt})` : ''}</td>
          <td>${duration(s.startedAt, s.closedAt)}</td>
          <td><details><summary>params</summary><pre>${JSON.stringify(s.params, null, 2)}</pre></details></td>
          <td>${Object.keys(s.metrics).length ? html`<details><summary>${Object.keys(s.metrics).length} metrics</summary><pre>${JSON.stringify(s.metrics, null, 2)}</pre></details>` : s.progress ? html`<span class="hint">${JSON.stringify(s.progress).slice(0, 80)}</span>` : '—'}</td>
          <td>${s.outputs.length ? html`<ul class="plain">${s.outputs.map((o) => html`<li><strong>${o.kind}</strong> ${bytes(o.bytes)} <code title=${o.sha256}>${o.sha256.slice(0, 12)}…</code></li>`)}</ul>` : '—'}</td>
          <td>${s.error ? html`<span class="error">${s.errorType ? `${s.errorType}: ` : ''}${s.error}</span>` : '—'}</td>
        </tr>`,
      )}
    </tbody>
  </table></div>`;
}

/** Retry (with params checked against the plugin's schema), skip, abort; cancel; resume with its dry-run plan first. */
function Decisions(props: { run: Run; schemas: Record<string, unknown>; reload: () => Promise<void> }) {
  const { run } = props;
  const [msg, setMsg] = useState('');
  const [plan, setPlan] = useState<{ from: string; startAt: string | null; stages: { id: string; action: string; reason: string }[] } | null>(null);
  const [confirmCancel, setConfirmCancel] = useState(false);
  const act = async (what: string, query: string, vars: Record<string, unknown>) => {
    setMsg(`${what}…`);
    try {
      const r = await gql(query, vars);
      setMsg(`${what}: done`);
      await props.reload();
      return r;
    } catch (e) {
      setMsg(`${what} refused: ${e instanceof ApiError ? `${e.code}: ` : ''}${(e as Error).message}`);
      return undefined;
    }
  };
  const open = OPEN.includes(run.status);
  return html`<section class="decisions" aria-labelledby="dec">
    <h2 id="dec">Actions</h2>
    ${run.pausedStages.map((id) => {
      const s = run.stages.find((x) => x.id === id)!;
      return html`<${DecisionForm} key=${id} run=${run} stage=${s} schema=${props.schemas[s.plugin]} act=${act} />`;
    })}
    <div class="row">
      ${
        open &&
        (confirmCancel
          ? html`<div class="confirm" role="group" aria-label="Confirm cancel">
            <p>Cancelling stops ${
              run.stages
                .filter((s) => s.status === 'RUNNING')
                .map((s) => s.id)
                .join(', ') || 'no running stage'
            } at its next heartbeat; ${run.stages.filter((s) => s.status === 'SUCCEEDED').length} completed stage(s) keep their artifacts, and the run can be resumed from them later.</p>
            <button class="danger" onClick=${() => {
              setConfirmCancel(false);
              void act('Cancel', 'mutation($id: ID!) { cancelRun(runId: $id) { id } }', { id: run.id });
            }}>Cancel the run</button>
            <button onClick=${() => setConfirmCancel(false)}>Keep it running</button>
          </div>`
          : html`<button onClick=${() => setConfirmCancel(true)}>Cancel run…</button>`)
      }
      ${
        !open &&
        run.status !== 'COMPLETED' &&
        html`<button data-testid="plan-resume" onClick=${async () => {
          const r = await act(
            'Resume plan',
            'mutation($id: ID!) { resumeRun(runId: $id, dryRun: true) { plan { from startAt stages { id action reason } } } }',
            { id: run.id },
          );
          if (r) setPlan((r as { resumeRun: { plan: typeof plan } }).resumeRun.plan);
        }}>Plan a resume…</button>`
      }
    </div>
    ${
      plan &&
      html`<div class="plan" data-testid="resume-plan">
      <h3>Resume plan (dry run)</h3>
      <table><thead><tr><th scope="col">Stage</th><th scope="col">Action</th><th scope="col">Why</th></tr></thead>
        <tbody>${plan.stages.map((s) => html`<tr><td>${s.id}</td><td>${s.action.toLowerCase()}</td><td>${s.reason}</td></tr>`)}</tbody></table>
      <button onClick=${async () => {
        const r = await act('Resume', 'mutation($id: ID!) { resumeRun(runId: $id) { run { id } } }', { id: run.id });
        const id = (r as { resumeRun?: { run?: { id: string } } } | undefined)?.resumeRun?.run?.id;
        if (id) location.hash = `#/runs/${encodeURIComponent(id)}`;
      }}>Start the resumed run</button>
      <button onClick=${() => setPlan(null)}>Close</button>
    </div>`
    }
    <p aria-live="polite" class="hint" data-testid="action-message">${msg}</p>
  </section>`;
}

function DecisionForm(props: { run: Run; stage: Stage; schema: unknown; act: (what: string, q: string, v: Record<string, unknown>) => Promise<unknown> }) {
  const { run, stage } = props;
  const [text, setText] = useState(JSON.stringify(stage.params ?? {}, null, 2));
  const [issues, setIssues] = useState<SchemaIssue[]>([]);
  const [reason, setReason] = useState('');
  const fid = `params-${stage.id}`;
  const check = (t: string): unknown => {
    let v: unknown;
    try {
      v = JSON.parse(t);
    } catch (e) {
      setIssues([{ path: 'params', message: `is not JSON: ${(e as Error).message}` }]);
      return undefined;
    }
    const found = props.schema ? validate(props.schema as Record<string, unknown>, v) : [];
    setIssues(found);
    return found.length ? undefined : v;
  };
  return html`<form class="decision" data-testid=${`decision-${stage.id}`} onSubmit=${(e: Event) => e.preventDefault()}>
    <h3>Stage <code>${stage.id}</code> failed: the run waits for a decision</h3>
    <p class="error">${stage.errorType ? `${stage.errorType}: ` : ''}${stage.error}</p>
    <label for=${fid}>Params for the retry (JSON, checked against ${stage.plugin}'s schema)</label>
    <textarea id=${fid} name="params" rows="6" spellcheck=${false} value=${text} aria-invalid=${issues.length > 0} aria-describedby=${`${fid}-issues`}
      onInput=${(e: Event) => {
        const t = (e.target as HTMLTextAreaElement).value;
        setText(t);
        check(t);
      }}></textarea>
    <ul id=${`${fid}-issues`} class="issues" role="alert" data-testid="param-issues">${issues.map((i) => html`<li><code>${i.path}</code> ${i.message}</li>`)}</ul>
    <div class="row">
      <button type="button" disabled=${issues.length > 0} onClick=${() => {
        const v = check(text);
        if (v !== undefined)
          void props.act(`Retry ${stage.id}`, 'mutation($id: ID!, $s: String!, $p: JSON) { retryStage(runId: $id, stageId: $s, params: $p) { id status } }', {
            id: run.id,
            s: stage.id,
            p: v,
          });
      }}>Retry with these params</button>
      <button type="button" onClick=${() => props.act(`Skip ${stage.id}`, 'mutation($id: ID!, $s: String!) { skipStage(runId: $id, stageId: $s) { id } }', { id: run.id, s: stage.id })}>Skip stage</button>
      <label>Reason <input name="reason" value=${reason} onInput=${(e: Event) => setReason((e.target as HTMLInputElement).value)} /></label>
      <button type="button" class="danger" disabled=${!reason.trim()} onClick=${() => props.act('Abort', 'mutation($id: ID!, $r: String!) { abortRun(runId: $id, reason: $r) { id } }', { id: run.id, r: reason })}>Abort run</button>
    </div>
  </form>`;
}
