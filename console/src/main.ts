// The Capstan console: runs, a run's timeline and curves, pipelines and money, models. A single
// page served by the API at /console; it signs in with an API token kept in sessionStorage.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { html, render } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, getToken, gql, setToken } from './api.js';
import { ModelsPage } from './models.js';
import { PipelinesPage } from './pipelines.js';
import { RunPage } from './run.js';
import { RunsPage } from './runs.js';

export interface Me {
  name: string;
  role: 'VIEWER' | 'PREDICTOR' | 'OPERATOR' | 'ADMIN';
}

/** What the signed-in role may do (the API checks again). */
export const can = {
  operate: (me: Me) => me.role === 'OPERATOR' || me.role === 'ADMIN',
  admin: (me: Me) => me.role === 'ADMIN',
  predict: (me: Me) => me.role !== 'VIEWER',
};

function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/runs');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/runs');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function SignIn(props: { onSignedIn: (me: Me) => void; error?: string }) {
  const [token, setT] = useState('');
  const [error, setError] = useState(props.error ?? '');
  const submit = async (e: Event) => {
    e.preventDefault();
    setToken(token.trim());
    try {
      const { whoami } = await gql<{ whoami: Me }>('{ whoami { name role } }');
      props.onSignedIn(whoami);
    } catch (err) {
      setToken(null);
      setError(
        err instanceof ApiError && err.code === 'UNAUTHENTICATED'
          ? 'That token was not accepted (unknown, expired or revoked).'
          : String((err as Error).message),
      );
    }
  };
  return html`<main id="main" class="signin">
    <h1>Capstan console</h1>
    <form onSubmit=${submit}>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" required value=${token} onInput=${(e: Event) => setT((e.target as HTMLInputElement).value)} placeholder="cap_…" />
      <button type="submit">Sign in</button>
      <p class="hint">The token stays in this tab (sessionStorage) and is sent as <code>Authorization: Bearer …</code>. <code>npm start</code> prints where the admin token is; <code>npm run token -- create --role viewer</code> makes more.</p>
      ${error && html`<p role="alert" class="error">${error}</p>`}
    </form>
  </main>`;
}

function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [checked, setChecked] = useState(false);
  const hash = useHash();
  useEffect(() => {
    if (!getToken()) return setChecked(true);
    gql<{ whoami: Me }>('{ whoami { name role } }')
      .then((r) => setMe(r.whoami))
      .catch(() => setToken(null))
      .finally(() => setChecked(true));
  }, []);
  if (!checked) return html`<p>Loading…</p>`;
  if (!me) return html`<${SignIn} onSignedIn=${setMe} />`;
  const [, page, ...rest] = hash.split('/');
  const arg = rest.length ? decodeURIComponent(rest.join('/')) : undefined;
  const nav = [
    ['#/runs', 'Runs', page === 'runs'],
    ['#/pipelines', 'Pipelines & money', page === 'pipelines'],
    ['#/models', 'Models', page === 'models'],
  ] as const;
  let body: ReturnType<typeof html>;
  if (page === 'runs' && arg) body = html`<${RunPage} id=${arg} me=${me} />`;
  else if (page === 'pipelines') body = html`<${PipelinesPage} me=${me} />`;
  else if (page === 'models') body = html`<${ModelsPage} me=${me} />`;
  else body = html`<${RunsPage} me=${me} />`;
  return html`<a class="skip" href="#main" onClick=${(e: Event) => {
    e.preventDefault();
    document.getElementById('main')?.focus();
  }}>Skip to content</a>
    <header>
      <strong class="brand">Capstan</strong>
      <nav aria-label="Console pages">
        <ul>${nav.map(([href, label, current]) => html`<li><a href=${href} aria-current=${current ? 'page' : undefined}>${label}</a></li>`)}</ul>
      </nav>
      <span class="who" data-testid="whoami">${me.name} · ${me.role.toLowerCase()}</span>
      <button class="link" onClick=${() => {
        setToken(null);
        setMe(null);
      }}>Sign out</button>
    </header>
    <main id="main" tabindex="-1">${body}</main>`;
}

render(html`<${App} />`, document.getElementById('app')!);
