import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, gql } from './api.js';
import { bytes, pct, runHref, when } from './format.js';
import { can, type Me } from './main.js';

interface Version {
  version: number;
  runId: string;
  testAccuracy: number | null;
  p50LatencyMs: number | null;
  p99LatencyMs: number | null;
  sizeBytes: number | null;
  sparsity: number | null;
  dtype: string | null;
  format: 'TFJS_LAYERS' | 'ONNX';
  runtime: string | null;
  createdAt: string;
  aliases: string[];
  gates: { gate: string; passed: boolean; threshold: number; measured: number; note: string | null }[] | null;
}
interface Model {
  name: string;
  production: { version: number } | null;
  servingVersion: number | null;
  servingRuntime: string | null;
  aliases: { alias: string; version: number }[];
  versions: Version[];
  productionHistory: { alias: string; version: number; previousVersion: number | null; reason: string; at: string }[];
}

const MODELS = `{ models { name production { version } servingVersion servingRuntime aliases { alias version }
  versions { version runId testAccuracy p50LatencyMs p99LatencyMs sizeBytes sparsity dtype format runtime createdAt aliases gates { gate passed threshold measured note } }
  productionHistory { alias version previousVersion reason at } } }`;

const FORMAT_NAMES: Record<Version['format'], string> = { TFJS_LAYERS: 'tfjs layers', ONNX: 'ONNX' };

/** Models: versions and their measurements, aliases, promote/rollback (admin), and a try-it panel. */
export function ModelsPage(props: { me: Me }) {
  const [models, setModels] = useState<Model[] | null>(null);
  const [msg, setMsg] = useState('');
  const load = () =>
    gql<{ models: Model[] }>(MODELS)
      .then((r) => setModels(r.models))
      .catch((e: Error) => setMsg(e.message));
  useEffect(() => void load(), []);
  const move = async (m: Model, v: number, how: 'promoteModel' | 'rollbackModel') => {
    setMsg(`${how === 'promoteModel' ? 'Promoting' : 'Rolling back'} ${m.name} to v${v}…`);
    try {
      await gql(`mutation($n: String!, $v: Int!) { ${how}(name: $n, version: $v) { name } }`, { n: m.name, v });
      setMsg(`${m.name}: production is now v${v}`);
      await load();
    } catch (e) {
      setMsg(`refused: ${e instanceof ApiError ? `${e.code}: ` : ''}${(e as Error).message}`);
    }
  };
  if (!models) return html`<p>${msg || 'Loading…'}</p>`;
  return html`<h1>Models</h1>
    <p aria-live="polite" class="hint" data-testid="models-message">${msg}</p>
    ${models.length === 0 && html`<p class="hint">No model is registered yet (a pipeline's deploy stage registers one).</p>`}
    ${models.map((m) => {
      const prod = m.production?.version;
      return html`<section class="model" data-testid=${`model-${m.name}`} aria-labelledby=${`m-${m.name}`}>
        <h2 id=${`m-${m.name}`}>${m.name}</h2>
        <p>Production: <strong data-testid="production-version">${prod ? `v${prod}` : 'not set'}</strong> · serving here: <span data-testid="serving">${m.servingVersion ? `v${m.servingVersion}${m.servingRuntime ? ` on ${m.servingRuntime}` : ''}` : '—'}</span> · aliases: ${m.aliases.map((a) => `${a.alias} → v${a.version}`).join(', ') || 'none'}</p>
        <div class="scroll"><table>
          <thead><tr><th scope="col">Version</th><th scope="col">Accuracy</th><th scope="col">p50 / p99</th><th scope="col">Format</th><th scope="col">Size</th><th scope="col">Sparsity</th><th scope="col">dtype</th><th scope="col">Source run</th><th scope="col">Gates</th><th scope="col">Aliases</th>${can.admin(props.me) ? html`<th scope="col">Action</th>` : ''}</tr></thead>
          <tbody>${m.versions.map(
            (v) => html`<tr data-version=${v.version}>
              <th scope="row">v${v.version}<br /><span class="hint">${when(v.createdAt)}</span></th>
              <td class="num">${pct(v.testAccuracy, 2)}</td>
              <td class="num">${v.p50LatencyMs?.toFixed(2) ?? '—'} / ${v.p99LatencyMs?.toFixed(2) ?? '—'} ms</td>
              <td data-testid="format" title=${v.runtime ? `measured on ${v.runtime}` : ''}>${FORMAT_NAMES[v.format]}${v.runtime ? html`<br /><span class="hint">${v.runtime}</span>` : ''}</td>
              <td class="num">${bytes(v.sizeBytes)}</td>
              <td class="num">${pct(v.sparsity, 0)}</td>
              <td>${v.dtype ?? '—'}</td>
              <td><a href=${runHref(v.runId)}>${v.runId}</a></td>
              <td>${v.gates ? html`<ul class="plain gates">${v.gates.map((g) => html`<li class=${g.passed ? 'ok' : 'error'}>${g.passed ? '✓' : '✗'} ${g.gate}${g.note ? ` — ${g.note}` : ` ${g.measured} vs ${g.threshold}`}</li>`)}</ul>` : '—'}</td>
              <td>${v.aliases.join(', ') || '—'}</td>
              ${
                can.admin(props.me) &&
                html`<td>${
                  prod === undefined || v.version > prod
                    ? html`<button data-testid="promote" onClick=${() => move(m, v.version, 'promoteModel')}>Promote v${v.version}</button>`
                    : v.version < prod
                      ? html`<button data-testid="rollback" onClick=${() => move(m, v.version, 'rollbackModel')}>Roll back to v${v.version}</button>`
                      : html`<span class="hint">in production</span>`
                }</td>`
              }
            </tr>`,
          )}</tbody>
        </table></div>
        <details><summary>Production history (${m.productionHistory.length})</summary>
          <ol>${m.productionHistory.map((h) => html`<li>${when(h.at)}: v${h.previousVersion ?? '—'} → v${h.version} (${h.reason})</li>`)}</ol>
        </details>
        ${can.predict(props.me) && prod !== undefined && html`<${TryIt} model=${m.name} formats=${Object.fromEntries(m.versions.map((v) => [v.version, FORMAT_NAMES[v.format]]))} />`}
      </section>`;
    })}`;
}

/** Draw a digit on a 28×28 canvas (shown at 10×), centred like MNIST, and predict it with the production version, whatever its format. */
function TryIt(props: { model: string; formats: Record<number, string> }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const drawing = useRef(false);
  const [result, setResult] = useState<{ label: number; probabilities: number[]; version: number } | null>(null);
  const [error, setError] = useState('');
  const clear = () => {
    const c = canvas.current!.getContext('2d')!;
    c.fillStyle = '#000';
    c.fillRect(0, 0, 280, 280);
    setResult(null);
  };
  useEffect(clear, []);
  const pos = (e: PointerEvent) => {
    const r = canvas.current!.getBoundingClientRect();
    return [((e.clientX - r.left) / r.width) * 280, ((e.clientY - r.top) / r.height) * 280] as const;
  };
  const stroke = (e: PointerEvent) => {
    if (!drawing.current) return;
    const c = canvas.current!.getContext('2d')!;
    const [x, y] = pos(e);
    c.fillStyle = '#fff';
    c.beginPath();
    c.arc(x, y, 11, 0, Math.PI * 2);
    c.fill();
  };
  const predict = async () => {
    setError('');
    try {
      const inputs = [toMnist(canvas.current!)];
      const r = await gql<{ predict: { version: number; predictions: { label: number; probabilities: number[] }[] } }>(
        'query($m: String!, $x: [[Float!]!]!) { predict(model: $m, inputs: $x) { version predictions { label probabilities } } }',
        { m: props.model, x: inputs },
      );
      setResult({ ...r.predict.predictions[0]!, version: r.predict.version });
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return html`<div class="tryit" data-testid="try-it">
    <h3>Try it</h3>
    <p class="hint" id=${`draw-${props.model}`}>Draw a digit with the mouse, a pen or a finger, then predict. (Keyboard users: the Predict button sends the canvas as it is.)</p>
    <div class="row">
      <canvas ref=${canvas} width="280" height="280" aria-describedby=${`draw-${props.model}`} aria-label="Drawing area, 28 by 28 pixels"
        onPointerDown=${(e: PointerEvent) => {
          drawing.current = true;
          (e.target as HTMLElement).setPointerCapture(e.pointerId);
          stroke(e);
        }}
        onPointerMove=${stroke} onPointerUp=${() => (drawing.current = false)} onPointerLeave=${() => (drawing.current = false)}></canvas>
      <div>
        <button onClick=${predict} data-testid="predict">Predict</button> <button onClick=${clear}>Clear</button>
        ${error && html`<p role="alert" class="error">${error}</p>`}
        ${
          result &&
          html`<p aria-live="polite">Prediction (<span data-testid="prediction-version">v${result.version}${props.formats[result.version] ? `, ${props.formats[result.version]}` : ''}</span>): <strong class="big" data-testid="prediction">${result.label}</strong></p>
          <ol class="probs" start="0">${result.probabilities.map((p, i) => html`<li><span class="bar" style=${`width:${Math.round(p * 100)}%`}></span> ${i}: ${(p * 100).toFixed(1)} %</li>`)}</ol>`
        }
      </div>
    </div>
  </div>`;
}

/** The drawing as MNIST sees digits: bounding box scaled into 20×20, centred by mass in 28×28, values 0–1. */
function toMnist(src: HTMLCanvasElement): number[] {
  const n = 280;
  const data = src.getContext('2d')!.getImageData(0, 0, n, n).data;
  let [x0, y0, x1, y1] = [n, n, -1, -1];
  for (let y = 0; y < n; y++)
    for (let x = 0; x < n; x++)
      if (data[(y * n + x) * 4]! > 20) {
        x0 = Math.min(x0, x);
        y0 = Math.min(y0, y);
        x1 = Math.max(x1, x);
        y1 = Math.max(y1, y);
      }
  const out = new Array<number>(784).fill(0);
  if (x1 < 0) return out;
  const side = Math.max(x1 - x0, y1 - y0) + 1;
  const tmp = document.createElement('canvas');
  tmp.width = tmp.height = 28;
  const t = tmp.getContext('2d')!;
  t.fillStyle = '#000';
  t.fillRect(0, 0, 28, 28);
  const w = ((x1 - x0 + 1) / side) * 20;
  const h = ((y1 - y0 + 1) / side) * 20;
  t.drawImage(src, x0, y0, x1 - x0 + 1, y1 - y0 + 1, (28 - w) / 2, (28 - h) / 2, w, h);
  const px = t.getImageData(0, 0, 28, 28).data;
  for (let i = 0; i < 784; i++) out[i] = px[i * 4]! / 255;
  // Centre of mass to the middle (as MNIST was prepared).
  let [sx, sy, m] = [0, 0, 0];
  for (let i = 0; i < 784; i++) {
    sx += (i % 28) * out[i]!;
    sy += Math.floor(i / 28) * out[i]!;
    m += out[i]!;
  }
  const dx = Math.round(14 - sx / m);
  const dy = Math.round(14 - sy / m);
  const shifted = new Array<number>(784).fill(0);
  for (let y = 0; y < 28; y++)
    for (let x = 0; x < 28; x++) {
      const nx = x + dx;
      const ny = y + dy;
      if (nx >= 0 && nx < 28 && ny >= 0 && ny < 28) shifted[ny * 28 + nx] = out[y * 28 + x]!;
    }
  return shifted;
}
