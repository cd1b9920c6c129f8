// The console talks only to the public GraphQL API (and its SSE subscription), with the token the
// user signed in with: whatever it shows, a script with the same token can read too.

const TOKEN_KEY = 'capstan.token';

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the API answered, with its code (e.g. FORBIDDEN, PLUGIN_PARAMS_INVALID). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

const ENDPOINT = '/graphql';

/** POSTs a GraphQL document; throws ApiError with the first error's code. */
export async function gql<T = unknown>(query: string, variables?: Record<string, unknown>): Promise<T> {
  const token = getToken();
  const res = await fetch(ENDPOINT, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  let body: { data?: T; errors?: { message: string; extensions?: Record<string, unknown> }[] };
  try {
    body = await res.json();
  } catch {
    throw new ApiError(`HTTP ${res.status}`, 'HTTP_ERROR');
  }
  const e = body.errors?.[0];
  if (e) throw new ApiError(e.message, String(e.extensions?.code ?? 'ERROR'), e.extensions ?? {});
  return body.data as T;
}

/**
 * A GraphQL subscription over SSE with fetch (EventSource cannot send an Authorization header).
 * Calls onData for each `next` event until the stream completes or `signal` aborts.
 */
export async function subscribe<T = unknown>(query: string, variables: Record<string, unknown>, onData: (d: T) => void, signal: AbortSignal): Promise<void> {
  const token = getToken();
  const res = await fetch(ENDPOINT, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
    signal,
  });
  if (!res.body) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const event = /^event: (.*)$/m.exec(chunk)?.[1];
      const data = chunk
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      if (event === 'complete') return;
      if (data) {
        const msg = JSON.parse(data) as { data?: T; errors?: unknown };
        if (msg.data) onData(msg.data);
      }
    }
  }
}
